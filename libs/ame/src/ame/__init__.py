"""AME: declare machine-learning work in ame.yml and run it locally or on the AME control plane."""

__version__ = "0.1.0"
