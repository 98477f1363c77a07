"""The scheduler: plan missing indices into job arrays, render sbatch scripts, submit them."""
