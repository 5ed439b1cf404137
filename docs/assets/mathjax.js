// MathJax 3 for the site: pymdownx.arithmatex (generic mode) writes each equation of a page or a
// docstring as \( ... \) or \[ ... \]; the notebooks' Markdown cells keep Jupyter's $ ... $ and
// $$ ... $$. Code blocks are left alone (MathJax skips pre and code).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
};

// Material's instant navigation swaps pages without reloading: typeset each new page.
document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
