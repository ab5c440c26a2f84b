# openai_simple_tokenizer.py: OpenAI CLIP's clip/simple_tokenizer.py, verbatim (github.com/openai/CLIP at commit
# 2558ec83f8fdfd5b500bf0c7255d1f53b5dbf588), the reference for the tokenizer parity tests with OpenAI's vocabulary
# (tests/tokenizer_test.ts) and the tokenizing benchmark's baseline (bench/data_baseline.py). It needs the `regex`
# module (Debian: python3-regex), as OpenAI's code does.
#
# One substitution, marked below: `import ftfy` takes the real ftfy when it is importable, and otherwise a stand-in,
# since Debian 12 does not package ftfy. The stand-in's fix_text is unicodedata's NFC, which is all ftfy.fix_text (6.x,
# default settings) does to a text that holds none of the characters its other steps change. It checks that first and
# raises ValueError for a text outside that domain, so a test caption on which the stand-in and ftfy could disagree
# fails loudly instead of comparing against a wrong reference:
#   - characters any step would change or remove, in the text or in what html.unescape makes of it: C0 controls but
#     tab, LF and FF (remove_control_chars, fix_line_breaks: CR; remove_terminal_escapes: ESC), DEL, C1 controls
#     (fix_c1_controls), U+2028/U+2029 (fix_line_breaks), ftfy's LIGATURES (fix_latin_ligatures), U+3000 and
#     U+FF01..U+FFEF (fix_character_width), U+02BC and U+2018..U+201F (uncurl_quotes), U+206A..U+206F, U+FEFF,
#     U+FFF9..U+FFFC (remove_control_chars), lone surrogates (fix_surrogates);
#   - HTML that ftfy's unescape_html (run until nothing changes, before the two html.unescape) would decode further
#     than html.unescape twice: an entity ftfy decodes (&#?[0-9A-Za-z]{1,24}; that is a known name, an upper-case
#     alias of one, or a numeric reference html.unescape consumes whole) still there after two html.unescape, and
#     ftfy's upper-case aliases of lower-case entity names (&EACUTE;) anywhere;
#   - a result of html.unescape that is not NFC (ftfy normalises after unescaping, the stand-in before).
# What it cannot check is fix_encoding (mojibake such as "cafÃ©"): the test captions avoid Latin-1 and Windows-1252
# byte look-alikes next to each other, and were run once against the real ftfy 6.3.1 with identical ids.
import gzip
import html
import os
from functools import lru_cache

# ---- the substitution --------------------------------------------------------------------------------------------
try:
    import ftfy
except ImportError:
    import unicodedata as _unicodedata

    _FTFY_CHANGES = (
        "[\x00-\x08\x0b\x0d-\x1f\x7f-\x9f\u2028\u2029\u0132\u0133\u0149\u01c4-\u01cc\u01f1-\u01f3\ufb00-\ufb06"
        "\u3000\uff01-\uffef\u02bc\u2018-\u201f\u206a-\u206f\ufeff\ufff9-\ufffc\ud800-\udfff]"
    )

    class ftfy:  # noqa: N801  stands in for the module, so OpenAI's `ftfy.fix_text(text)` line stays as it is
        """ftfy.fix_text for texts on which it only normalises to NFC (see the header); ValueError for any other.
        A benchmark sets `checked = False` to time NFC alone (cheaper than ftfy: it favours the Python side)."""

        checked = True

        @staticmethod
        def fix_text(text):
            if not ftfy.checked:
                return _unicodedata.normalize("NFC", text)
            import regex

            unescaped = html.unescape(html.unescape(text))
            for where, value in (("text", text), ("html.unescape of the text", unescaped)):
                found = regex.search(_FTFY_CHANGES, value)
                if found:
                    raise ValueError(f"ftfy stand-in: the {where} holds U+{ord(found.group()):04X}, which ftfy changes")
            for value in (text, html.unescape(text)):
                for entity in regex.findall(r"&([0-9A-Za-z]{1,24});", value):
                    if entity + ";" not in html.entities.html5 and entity.lower() + ";" in html.entities.html5:
                        raise ValueError(f"ftfy stand-in: &{entity}; is an entity for ftfy, not for html.unescape")
            for leftover in regex.findall(r"&#?[0-9A-Za-z]{1,24};", unescaped):
                name = leftover[1:]
                if name in html.entities.html5 or name.lower() in html.entities.html5 or (
                    leftover.startswith("&#") and not html.unescape(leftover).endswith(";")
                ):
                    raise ValueError(f"ftfy stand-in: {leftover!r}, left after two html.unescape, is one for ftfy")
            if not _unicodedata.is_normalized("NFC", html.unescape(html.unescape(_unicodedata.normalize("NFC", text)))):
                raise ValueError("ftfy stand-in: html.unescape makes a text that is not NFC")
            return _unicodedata.normalize("NFC", text)
# ---- OpenAI's code from here on ------------------------------------------------------------------------------------
import regex as re


@lru_cache()
def default_bpe():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")


@lru_cache()
def bytes_to_unicode():
    """
    Returns list of utf-8 byte and a corresponding list of unicode strings.
    The reversible bpe codes work on unicode strings.
    This means you need a large # of unicode characters in your vocab if you want to avoid UNKs.
    When you're at something like a 10B token dataset you end up needing around 5K for decent coverage.
    This is a significant percentage of your normal, say, 32K bpe vocab.
    To avoid that, we want lookup tables between utf-8 bytes and unicode strings.
    And avoids mapping to whitespace/control characters the bpe code barfs on.
    """
    bs = list(range(ord("!"), ord("~")+1))+list(range(ord("¡"), ord("¬")+1))+list(range(ord("®"), ord("ÿ")+1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8+n)
            n += 1
    cs = [chr(n) for n in cs]
    return dict(zip(bs, cs))


def get_pairs(word):
    """Return set of symbol pairs in a word.
    Word is represented as tuple of symbols (symbols being variable-length strings).
    """
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


def basic_clean(text):
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text):
    text = re.sub(r'\s+', ' ', text)
    text = text.strip()
    return text


class SimpleTokenizer(object):
    def __init__(self, bpe_path: str = default_bpe()):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        merges = gzip.open(bpe_path).read().decode("utf-8").split('\n')
        merges = merges[1:49152-256-2+1]
        merges = [tuple(merge.split()) for merge in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v+'</w>' for v in vocab]
        for merge in merges:
            vocab.append(''.join(merge))
        vocab.extend(['<|startoftext|>', '<|endoftext|>'])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + ( token[-1] + '</w>',)
        pairs = get_pairs(word)

        if not pairs:
            return token+'</w>'

        while True:
            bigram = min(pairs, key = lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except:
                    new_word.extend(word[i:])
                    break

                if word[i] == first and i < len(word)-1 and word[i+1] == second:
                    new_word.append(first+second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            new_word = tuple(new_word)
            word = new_word
            if len(word) == 1:
                break
            else:
                pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in re.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(' '))
        return bpe_tokens

    def decode(self, tokens):
        text = ''.join([self.decoder[token] for token in tokens])
        text = bytearray([self.byte_decoder[c] for c in text]).decode('utf-8', errors="replace").replace('</w>', ' ')
        return text
