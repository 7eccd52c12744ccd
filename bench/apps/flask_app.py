"""The tutorial's Flask app, kept in its shape; run as `python flask_app.py HOST PORT`."""

import os
import pickle
import sys

from flask import Flask, Response, jsonify, request

app = Flask(__name__)
with open(os.environ["MODEL_PATH"], "rb") as f:
    model = pickle.load(f)


@app.route("/predict", methods=["POST"])
def predict() -> Response:
    data = request.get_json()
    features = data["features"]
    prediction = model.predict([features])[0]
    return jsonify({"prediction": prediction})


if __name__ == "__main__":
    app.run(host=sys.argv[1], port=int(sys.argv[2]))
