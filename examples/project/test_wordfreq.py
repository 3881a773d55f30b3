"""What "correct" means for wordfreq.top_words (autotune.checks.sh runs this).

An experiment that makes top_words faster but fails one of these is logged as
checks_failed and reverted.
"""

import sys
import unittest

from wordfreq import top_words

CORPUS_TOP_10 = [
    ("light", 15), ("keeper", 13), ("harbour", 7), ("lamp", 6), ("notebook", 6),
    ("ship", 5), ("night", 4), ("sea", 4), ("town", 4), ("turned", 4),
]


class TopWords(unittest.TestCase):
    def test_most_frequent_first(self):
        self.assertEqual(top_words("oil bell oil lamp lamp lamp", 3),
                         [("lamp", 3), ("oil", 2), ("bell", 1)])

    def test_ties_in_alphabetical_order(self):
        self.assertEqual(top_words("pear fig apple fig pear apple kiwi", 4),
                         [("apple", 2), ("fig", 2), ("pear", 2), ("kiwi", 1)])

    def test_case_and_punctuation_ignored(self):
        self.assertEqual(top_words('Sea, sea. SEA! "Harbour" (harbour); keeper\'s', 3),
                         [("sea", 3), ("harbour", 2), ("keeper's", 1)])

    def test_stopwords_not_counted(self):
        self.assertEqual(top_words("The keeper and the light; the light!", 5),
                         [("light", 2), ("keeper", 1)])

    def test_fewer_words_than_k(self):
        self.assertEqual(top_words("lamp oil", 10), [("lamp", 1), ("oil", 1)])
        self.assertEqual(top_words("", 3), [])
        self.assertEqual(top_words("... !!", 3), [])

    def test_corpus(self):
        with open("corpus.txt", encoding="utf-8") as f:
            self.assertEqual(top_words(f.read(), 10), CORPUS_TOP_10)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=0).result
    for test, _ in result.failures + result.errors:  # a short summary at the end of the output
        print("FAILED: %s" % test.id().rsplit(".", 1)[-1])
    sys.exit(0 if result.wasSuccessful() else 1)
