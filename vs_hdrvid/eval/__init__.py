"""Evaluation against synthetic ground truth: the harness behind ``vs-hdrvid eval``."""
from vs_hdrvid.eval.cli import add_cli, run_cli
from vs_hdrvid.eval.harness import METHODS, aggregate, evaluate

__all__ = ["METHODS", "add_cli", "aggregate", "evaluate", "run_cli"]
