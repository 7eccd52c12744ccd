"""A BentoML service for the pickled model; `bentoml serve bentoml_service:LinearRegression`."""

import os
import pickle

import bentoml


# Access logs off, as for every row that has the switch (see bench/README.md).
@bentoml.service(workers=2, logging={"access": {"enabled": False}})
class LinearRegression:
    def __init__(self) -> None:
        with open(os.environ["MODEL_PATH"], "rb") as f:
            self.model = pickle.load(f)

    @bentoml.api
    def predict(self, features: list[float]) -> dict[str, float]:
        return {"prediction": float(self.model.predict([features])[0])}
