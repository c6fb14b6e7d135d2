# Shared by bin/dev and bin/test: a virtualenv with the project's dependencies.
# Re-installs only when pyproject.toml changed (stamp file inside .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${1:-dev}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv in .venv"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.paydesk-$EXTRAS-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "==> installing Python dependencies ($EXTRAS)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$EXTRAS]"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
