"""Ad-to-visit lift: people-level (exposed vs held-out app users) and store-level (test vs control stores).

- `people`: people-level ad-to-visit lift (exposed vs held-out app users).
- `tbr`: time-based regression (Kerman, Wang and Vaver, Google; the `matched_markets` method) for a
  designed test/control split of stores, with iROAS when the campaign's cost is known.
- `synthetic_control`: synthetic control on a locations x periods panel (Meta's GeoLift default:
  no prognostic model, unit fixed effects), with a conformal permutation p-value and interval
  (Chernozhukov, Wuethrich and Zhu; moving-block permutations of the post-period against the
  block before it), calibrated on real footfall.
- `power`: power and minimum detectable effect by simulation on historical windows, to plan a test.

Pure numpy/scipy over plain arrays; reading CSV files and printing is the CLI's job
(`omnisense.lift_cli`).
"""
