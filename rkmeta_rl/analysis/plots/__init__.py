"""The figures of finished runs, one module each, behind ``rkmeta-rl plot FIGURE``.

* ``training``: meta-training curves, return before and after adaptation (+ CSV);
* ``adaptation``: Figure 5, held-out return against the number of gradient steps (+ CSV);
* ``trajectories``: Figure 4, a 2D-navigation policy's paths after 0, 1, ... steps;
* ``sinusoid_adaptation`` (``sinusoid-adaptation``): sinusoid runs' predictions after 0,
  1, ... steps;
* ``fewshot_steps`` (``fewshot-steps``): Figure 3, held-out accuracy (or loss) against the
  test steps (+ CSV);
* ``tableaus``: Figure 1, each named tableau's stage points and slopes on a quadratic.

Each module holds its figure's flags (``add_args``), ``draw(parser, args)`` and the
``main(argv)`` of its thin ``scripts/plot_*.py`` driver, kept for the commands written
with the scripts. Matplotlib is optional: it is imported when a figure is drawn
(``rkmeta_rl.analysis.plotting.pyplot``), not with these modules."""
