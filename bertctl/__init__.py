"""bertctl: fine-tune, evaluate and serve BERT text classifiers from TOML recipes.

    from bertctl import Predictor          # batch prediction for Ray Data, Spark, pandas (bertctl.batch)
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    # lazy, so `import bertctl` (and every `bertctl` command's start) stays cheap: bertctl.batch imports the
    # inference package, which the CLI's fast commands never need
    if name == "Predictor":
        from bertctl.batch import Predictor

        return Predictor
    raise AttributeError(f"module 'bertctl' has no attribute {name!r}")
