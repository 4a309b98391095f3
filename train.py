"""train.py: trains the ConvGRU + FiLM world model. Not implemented yet: see issue #5."""
import sys

if __name__ == "__main__":
    sys.exit("train.py is not implemented yet (issue #5).")
