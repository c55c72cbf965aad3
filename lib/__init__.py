"""FSNet model package."""
from lib.fsnet import FSNet

__all__ = ["FSNet"]
