"""Pick the best parameters of the example sweep from its results."""

import pyexp

exp = pyexp.loadExperiment("experiments/mc/sarsa.json")
results = list(pyexp.loadResults(exp, "returns.npy", runs=3))
best = pyexp.getBest(results, percent=0.1)
print("best parameters:", best.params)
for alpha, group in sorted(pyexp.splitOverParameter(results, "alpha").items()):
    print(f"alpha={alpha}: {len(group)} results")
