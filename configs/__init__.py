"""The shipped configs (YAML): a package only so that a wheel install carries them next to the code."""
