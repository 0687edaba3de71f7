"""Pieces shared by several model families (text corpora, ...)."""
