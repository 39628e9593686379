"""Report-quality metrics for `edgecap evaluate` and `edgecap bench` (no TensorFlow here).

nlg        BLEU-1..4, METEOR, ROUGE-L, CIDEr via pycocoevalcap, with or without the PTB tokenizer
           (the result says which: the two pipelines are not comparable, see docs/conventions.md).
diversity  distinct-1/2, share of distinct reports, most frequent report (pure Python): the check that
           catches "the same report for every image", which BLEU hides on IU X-Ray.
"""
