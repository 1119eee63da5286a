"""Generation backends behind one protocol (base.py): native transformers (hf.py) and SGLang (sglang.py)."""
