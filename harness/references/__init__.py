"""Reference artefacts: statistics and feature rows of real images, foreign imports, and their cache."""
