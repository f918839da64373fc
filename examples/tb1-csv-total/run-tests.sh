#!/bin/bash
# The published template installs uv and pytest here; offline, the image already has pytest.
set -u
cd /app
python3 -m pytest "$TEST_DIR/test_outputs.py" -rA
