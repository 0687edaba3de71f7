"""Helpers for tests that compare backends exactly."""
from .ops.common.philox import dropout_keep_mask

__all__ = ["dropout_keep_mask"]
