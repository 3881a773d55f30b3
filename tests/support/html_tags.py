"""The tags and attribute names an HTML document holds (the report tests check that
hostile text never becomes markup)."""

import html.parser


class TagCollector(html.parser.HTMLParser):
    """Collects the tags and attribute names of a document: feed() it, then read
    .tags and .attrs."""

    def __init__(self):
        html.parser.HTMLParser.__init__(self)
        self.tags, self.attrs = set(), set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)
