"""live_inference.py: keyboard and mouse play. Not implemented yet: see issue #7."""
import sys

if __name__ == "__main__":
    sys.exit("live_inference.py is not implemented yet (issue #7).")
