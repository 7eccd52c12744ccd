"""``modelport k8s export | kserve | chart | stack``: Kubernetes manifests, KServe and Helm for model images."""

from __future__ import annotations

from pathlib import Path

import typer

from modelport.cli.output import console, success

app = typer.Typer(help="Run model images on Kubernetes: manifests, a Helm chart, a KServe InferenceService.",
                  no_args_is_help=True)

REF = typer.Argument(..., help="The model: NAME, NAME:3 or NAME@alias (its image: modelport build REF).")
OUT = typer.Option(..., "--output", "-o", help="The directory to write to.")
REPLICAS = typer.Option(2, "--replicas", min=1, help="Pods (the autoscaler's minimum, unless --autoscale says otherwise).")
AUTOSCALE = typer.Option(None, "--autoscale", help="MIN:MAX pods for the HorizontalPodAutoscaler (default REPLICAS:4×REPLICAS), or 'off'.")
NAMESPACE = typer.Option(None, "--namespace", "-n", help="The namespace of every resource (default: kubectl's).")
CANARY = typer.Option(None, "--canary", help="REF:PERCENT: another version of the model beside it, e.g. houses:3:10.")
CPU = typer.Option("1", "--cpu", help="CPU request and limit of each pod (one server worker per CPU).")
MEMORY = typer.Option("1Gi", "--memory", help="Memory request and limit of each pod.")
REGISTRY = typer.Option(None, "--registry", help="The registry the cluster pulls from: images are REGISTRY/modelport/NAME:VERSION.")


def _options(replicas: int, autoscale: str | None, namespace: str | None, cpu: str, memory: str, registry: str | None):
    from modelport.k8s.manifests import Options, parse_autoscale

    return Options(replicas=replicas, autoscale=parse_autoscale(autoscale, replicas), namespace=namespace, cpu=cpu,
                   memory=memory, registry=registry)


def _written(paths: list[Path], dest: Path) -> None:
    for p in paths:
        console.print(f"  {p.relative_to(dest)}")


def _write(manifests, dest: Path, what: str, apply: str) -> None:
    """Write ``manifests`` into ``dest`` and say what was written and how to apply it."""
    from modelport.k8s.manifests import write

    paths = write(manifests, dest)
    success(f"Wrote {what} to {dest}", f"  ({apply})")
    _written(paths, dest)


@app.command("export")
def export(ref: str = REF, output: Path = OUT, replicas: int = REPLICAS, autoscale: str = AUTOSCALE,
           namespace: str = NAMESPACE, canary: str = CANARY, cpu: str = CPU, memory: str = MEMORY,
           registry: str = REGISTRY) -> None:
    """Manifests for one model: Deployment, Service, autoscaler, disruption budget, ServiceMonitor."""
    from modelport.k8s.manifests import release

    r = release(ref, _options(replicas, autoscale, namespace, cpu, memory, registry), canary=canary)
    _write(r.manifests(), output, f"the manifests of {r.stable.ref}", f"kubectl apply -f {output}")


@app.command("kserve")
def kserve(ref: str = REF, output: Path = OUT, replicas: int = REPLICAS, autoscale: str = AUTOSCALE,
           namespace: str = NAMESPACE, canary: str = CANARY, cpu: str = CPU, memory: str = MEMORY,
           registry: str = REGISTRY) -> None:
    """A KServe InferenceService (custom predictor, protocol v2); with --canary, the canary update too."""
    from modelport.k8s.manifests import release

    r = release(ref, _options(replicas, autoscale, namespace, cpu, memory, registry), canary=canary)
    _write(r.inference_service(), output, f"the InferenceService of {r.stable.ref}",
           f"kubectl apply -f {output}/inferenceservice.yaml")


@app.command("chart")
def chart(ref: str = REF, output: Path = OUT, replicas: int = REPLICAS, autoscale: str = AUTOSCALE,
          canary: str = CANARY, cpu: str = CPU, memory: str = MEMORY, registry: str = REGISTRY) -> None:
    """A Helm chart for the model, its values from the model's metadata and these options."""
    from modelport.k8s.chart import write_chart
    from modelport.k8s.manifests import release

    r = release(ref, _options(replicas, autoscale, None, cpu, memory, registry), canary=canary)
    write_chart(r, output)
    success(f"Wrote the Helm chart of {r.stable.ref} to {output}", f"  (helm install {r.name} {output})")


@app.command("stack")
def stack(output: Path = OUT, directory: Path = typer.Option(Path("."), "--dir", "-C", help="The stack's directory."),
          replicas: int = REPLICAS, autoscale: str = AUTOSCALE, namespace: str = NAMESPACE, cpu: str = CPU,
          memory: str = MEMORY, registry: str = REGISTRY,
          storage: str = typer.Option("10Gi", "--storage", help="The PostgreSQL volume's size.")) -> None:
    """A stack's models, gateway and PostgreSQL; the database password stays in a Secret you create."""
    from modelport.deploy.stack import Stack
    from modelport.k8s.manifests import write
    from modelport.k8s.stack import secret_command, stack_manifests

    s = Stack.load(directory)
    paths = write(stack_manifests(s, _options(replicas, autoscale, namespace, cpu, memory, registry), storage=storage),
                  output)
    success(f"Wrote the manifests of the stack {s.state.name} to {output}")
    _written(paths, output)
    console.print(f"First put the database password in the cluster (in {s.directory}):\n  {secret_command(s, namespace)}\n"
                  f"then: kubectl apply -R -f {output}")
