"""The tiled online-softmax core shared by the three operators, specialised by a score modifier."""
from .launch import attention_backward, attention_forward

__all__ = ["attention_forward", "attention_backward"]
