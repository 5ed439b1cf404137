// MathJax 3 for the site: pymdownx.arithmatex (generic mode) wraps each equation of a page or a
// docstring in an element of class "arithmatex" as \( ... \) or \[ ... \]; the notebooks'
// Markdown cells keep Jupyter's $ ... $ and $$ ... $$. Nothing else on a page is typeset.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-MarkdownOutput",
  },
};

// Material's instant navigation swaps pages without reloading: typeset each new page.
document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
