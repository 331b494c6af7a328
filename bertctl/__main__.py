"""`python -m bertctl ...` (also what `accelerate launch -m bertctl train ...` runs)."""

from bertctl.cli import main

if __name__ == "__main__":
    main()
