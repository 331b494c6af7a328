"""bertctl: fine-tune, evaluate and serve BERT text classifiers from TOML recipes."""

__version__ = "0.1.0"
