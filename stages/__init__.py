"""Pipeline stages: read -> validate/tokenize -> decode -> write. Ray appears only here and in pipeline.py."""
