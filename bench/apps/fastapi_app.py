"""A hand-written FastAPI endpoint, as a user would write it for a scikit-learn model."""

import os
import pickle

from fastapi import FastAPI
from pydantic import BaseModel

with open(os.environ["MODEL_PATH"], "rb") as f:
    model = pickle.load(f)

app = FastAPI()


class Features(BaseModel):
    features: list[float]


# A plain `def` (run in the threadpool) is FastAPI's advice for blocking work like predict().
@app.post("/predict")
def predict(req: Features) -> dict[str, float]:
    return {"prediction": float(model.predict([req.features])[0])}
