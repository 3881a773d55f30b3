"""wordfreq: the most frequent words of a text. This is the code autotune optimizes.

top_words(text, k) returns the k most frequent words of `text` as (word, count)
pairs, most frequent first, ties in alphabetical order. Words are the
whitespace-separated tokens of the text without the punctuation around them, in
lowercase ("Harbour." counts as "harbour"; "keeper's" stays one word). Common
English stopwords ("the", "and", ...) are not counted.

This first version is correct and deliberately naive. autotune.sh measures it
(the Python lines one call executes); test_wordfreq.py says what "correct" means.
"""

PUNCTUATION = "\"'()[].,;:!?"

STOPWORDS = [
    "a", "after", "all", "along", "an", "and", "as", "at", "be", "because", "before",
    "behind", "below", "but", "by", "came", "could", "did", "each", "every", "for",
    "from", "had", "has", "have", "he", "her", "him", "his", "i", "if", "in", "into",
    "is", "it", "its", "many", "much", "no", "none", "not", "now", "of", "on", "one",
    "only", "or", "out", "over", "said", "same", "she", "so", "still", "that", "the",
    "them", "then", "there", "they", "this", "to", "toward", "under", "up", "very",
    "was", "way", "well", "went", "were", "what", "when", "where", "which", "who",
    "with", "would", "you",
]


def normalize(token):
    """A token without the punctuation around it, in lowercase."""
    word = token.strip(PUNCTUATION)
    return word.lower()


def top_words(text, k=10):
    """The k most frequent words: [(word, count), ...], ties in alphabetical order."""
    counts = {}
    for token in text.split():
        word = normalize(token)
        if not word or word in STOPWORDS:
            continue
        if word in counts:
            counts[word] += 1
        else:
            counts[word] = 1
    # pick the winners one at a time: the most frequent, then the alphabetically first
    top = []
    remaining = dict(counts)
    while remaining and len(top) < k:
        best = None
        for word, count in remaining.items():
            if best is None or count > remaining[best] or (count == remaining[best] and word < best):
                best = word
        top.append((best, remaining.pop(best)))
    return top
