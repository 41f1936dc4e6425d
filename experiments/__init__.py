"""Reproducible experiments that go with fused_lstm (run them as ``python -m experiments.<name>``)."""
