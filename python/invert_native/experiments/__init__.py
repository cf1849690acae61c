"""The paper's experiments: Table 1 (HOG, HOGb, DSIFT) and the CaffeNet layer sweeps."""
