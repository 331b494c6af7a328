"""bertctl: fine-tune, evaluate and serve BERT text classifiers from TOML recipes.

    from bertctl import Predictor          # batch prediction for Ray Data, Spark, pandas (bertctl.batch)
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from bertctl.batch import Predictor  # lazy: `import bertctl` and every command's start stay cheap (no inference package)

        return Predictor
    raise AttributeError(f"module 'bertctl' has no attribute {name!r}")
