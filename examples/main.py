"""A stand-in for a researcher's experiment: one index in, one results file out."""

import argparse

import numpy as np

import pyexp

parser = argparse.ArgumentParser()
parser.add_argument("-e", "--experiment", required=True)
parser.add_argument("-i", "--index", type=int, required=True)
args = parser.parse_args()

exp = pyexp.loadExperiment(args.experiment)
params = exp.getPermutation(args.index)
rng = np.random.default_rng(args.index)

# A learning curve whose level depends on the parameters, so getBest has something to find.
steps = np.arange(100)
level = params["alpha"] * (1 - params["lambda"]) + params["optimizer"]["momentum"] / 10
curve = level + np.exp(-steps / 20) + rng.normal(0, 0.001, size=steps.shape)

context = exp.buildSaveContext(args.index)
np.save(context.ensureExists("returns.npy"), curve)
print(f"index {args.index}: {params} -> {context.resolve('returns.npy')}")
