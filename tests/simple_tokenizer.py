# simple_tokenizer.py: OpenAI CLIP's simple_tokenizer.py, ported to the standard library, for the tokenizer parity
# test on our own merges (tests/tokenizer_test.ts) and the tokenizing benchmark where python3-regex or OpenAI's
# vocabulary is missing (bench/data_baseline.py; tests/openai_simple_tokenizer.py is OpenAI's code itself). Two
# substitutions:
#   - ftfy.fix_text -> unicodedata NFC (the test captions contain nothing else ftfy would change);
#   - regex's \p{L} -> [^\W\d_], \p{N} -> \d, [^\s\p{L}\p{N}] -> [^\s\w]|_ (these agree with the Unicode classes except
#     for numerals that are not decimal digits, which the captions avoid).
import gzip, html, re, unicodedata

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~")+1))+list(range(ord("¡"), ord("¬")+1))+list(range(ord("®"), ord("ÿ")+1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8+n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))

def get_pairs(word):
    return set(zip(word[:-1], word[1:]))

def basic_clean(text):
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text))
    return text.strip()

def whitespace_clean(text):
    return re.sub(r'\s+', ' ', text).strip()

class SimpleTokenizer:
    def __init__(self, bpe_path):
        self.byte_encoder = bytes_to_unicode()
        merges = gzip.open(bpe_path).read().decode("utf-8").split('\n')
        merges = [tuple(m.split()) for m in merges[1:] if m]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v+'</w>' for v in vocab]
        for merge in merges:
            vocab.append(''.join(merge))
        vocab.extend(['<|startoftext|>', '<|endoftext|>'])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""", re.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + '</w>',)
        pairs = get_pairs(word)
        if not pairs:
            return token+'</w>'
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float('inf')))
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
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word)-1 and word[i+1] == second:
                    new_word.append(first+second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in re.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            bpe_tokens.extend(self.encoder[t] for t in self.bpe(token).split(' '))
        return bpe_tokens

def tokenize(tok, texts, context_length, keep_eot):
    sot, eot = tok.encoder['<|startoftext|>'], tok.encoder['<|endoftext|>']
    rows = []
    for text in texts:
        tokens = [sot] + tok.encode(text) + [eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            if keep_eot:
                tokens[-1] = eot
        rows.append(tokens + [0] * (context_length - len(tokens)))
    return rows
