"""A LitServe API for the pickled model; run as `python litserve_app.py HOST PORT`."""

import os
import pickle
import sys
from typing import Any

import litserve as ls


class LinearAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        with open(os.environ["MODEL_PATH"], "rb") as f:
            self.model = pickle.load(f)

    def decode_request(self, request: dict[str, Any]) -> list[float]:
        return request["features"]

    def predict(self, x: list[float]) -> float:
        return float(self.model.predict([x])[0])

    def encode_response(self, output: float) -> dict[str, float]:
        return {"prediction": output}


if __name__ == "__main__":
    server = ls.LitServer(LinearAPI(), accelerator="cpu", workers_per_device=2)
    # No client.py written into the cwd; access_log goes through to uvicorn (off, as for the other rows).
    server.run(host=sys.argv[1], port=int(sys.argv[2]), generate_client_file=False, access_log=False)
