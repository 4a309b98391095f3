"""evaluate.py: fidelity, controllability and stability of a world model against baselines. Not implemented yet: see issue #6."""
import sys

if __name__ == "__main__":
    sys.exit("evaluate.py is not implemented yet (issue #6).")
