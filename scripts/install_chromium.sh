#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the report's browser test (tests/steps/test_report.py); needs root.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver
