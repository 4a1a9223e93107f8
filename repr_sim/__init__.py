"""ReprSimCauses: train model pairs on controlled splits, score their representations."""

__version__ = "0.1.0"
