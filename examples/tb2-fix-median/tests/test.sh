#!/bin/bash
# Harbor's template fetches uv and pytest here; offline, the image already has pytest.
mkdir -p /logs/verifier
cd /app
if python3 -m pytest /tests/test_stats.py -rA; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
