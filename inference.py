"""inference.py: videos from action scripts. Not implemented yet: see issue #7."""
import sys

if __name__ == "__main__":
    sys.exit("inference.py is not implemented yet (issue #7).")
