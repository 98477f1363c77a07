"""Pick the best parameters of the example sweep (by the mean over runs) and plot sensitivity."""

import matplotlib

import pyexp

matplotlib.use("Agg")  # draw to a file, no display needed
import matplotlib.pyplot as plt  # noqa: E402

exp = pyexp.loadExperiment("experiments/mc/sarsa.json")
results = list(pyexp.loadResults(exp, "returns.npy"))  # the runs pyexp-submit was given
best = pyexp.getBest(results, percent=0.1, prefer="small")  # mean over runs of the last 10%
print("best parameters:", best.params, f"({best.runs()} runs)")
for alpha, group in sorted(pyexp.splitOverParameter(results, "alpha").items()):
    print(f"alpha={alpha}: {len(group)} permutations")

fig, ax = plt.subplots(figsize=(6, 4))
pyexp.plotSensitivity(results, "alpha", by="lambda", percent=0.1, prefer="small", ax=ax, logx=True)
ax.set_title("SARSA on the example sweep: last 10% of each curve")
fig.tight_layout()
fig.savefig("sensitivity.png", dpi=80)
print("wrote sensitivity.png")
