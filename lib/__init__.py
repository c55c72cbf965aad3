"""FSNet model package."""
from lib.fsnet import FSNet, FSNetConfig

__all__ = ["FSNet", "FSNetConfig"]
