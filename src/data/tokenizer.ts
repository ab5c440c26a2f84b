// tokenizer.ts: OpenAI CLIP's byte-level BPE tokenizer (`SimpleTokenizer`, docs/data.md#tokenizer) in plain TypeScript,
// so ids match OpenAI's for its vocab file and for merges files written by bpe_trainer.ts (tested id for id against
// OpenAI's simple_tokenizer.py and bpe_simple_vocab_16e6.txt, which `deno task data openai-bpe` writes).
//
// What it trades away: OpenAI cleans every caption with `ftfy.fix_text`, which has no TypeScript port. `fixText`
// below reproduces the ftfy 6 steps that are table lookups or Unicode normalisation, and leaves out the mojibake
// detector. Done, as ftfy does them, per line and repeated until nothing changes:
//   - unescape_html: `&name;` and `&#...;` references ending in ';' (skipped for a text holding '<', as ftfy's
//     "auto" mode does), including ftfy's upper-case aliases such as `&EACUTE;`, over the entity subset below;
//   - fix_c1_controls (U+0080..U+009F read as Windows-1252), fix_latin_ligatures (ﬁ → fi, ĳ → ij, ...),
//     fix_character_width (fullwidth/halfwidth forms and U+3000 → their NFKC form), uncurl_quotes (‘’‚‛ʼ → ', “”„‟ → "),
//     fix_line_breaks, fix_surrogates (lone surrogates → U+FFFD), remove_terminal_escapes (ANSI `ESC [ ... letter`),
//     remove_control_chars (C0 controls but tab/LF/FF/CR, DEL, U+206A..U+206F, BOM, U+FFF9..U+FFFC), and NFC.
// Not done: fix_encoding and its helpers (restore_byte_a0, replace_lossy_sequences, decode_inconsistent_utf8), so
// mojibake such as "cafÃ©" or "â€™" stays as it is and tokenizes differently from OpenAI's; named entities outside
// the subset are left as text.
// HTML: Python's `html.unescape` is applied twice with its exact rules (numeric references with the HTML5 fix-ups,
// the longest-prefix match of legacy names written without ';'), but over a subset of the 2,231 HTML5 names: the 252
// HTML 4 entities (all of Latin-1, Greek, arrows, maths, typography such as &hellip; &mdash; &rsquo; &euro;), &apos;,
// and the upper-case legacy names (&AMP; &COPY; &GT; &LT; &QUOT; &REG; &TRADE;). Any other `&name;` stays literal.
// Speed: `cleanCaption` and `splitWords` are the reference, written as OpenAI's regexes; the tokenizer itself finds the
// same pre-tokens with one scan over char codes ("the fast pre-tokeniser" below says why that is exact), runs BPE on
// integer symbol ids, and caches ids per pre-token in typed arrays; tests compare it with the reference.
import { INPUT_CAPS, InputFileError, readInputFile } from "../fs/input_file.ts";
import { gunzipSync } from "node:zlib";
import { Tensor } from "../torch/mod.ts";

/** The context length of CLIP's text encoder. */
export const DEFAULT_CONTEXT_LENGTH = 77;
/** How many merges OpenAI's code reads from `bpe_simple_vocab_16e6.txt.gz` (49152 - 256 - 2). */
export const OPENAI_MERGE_COUNT = 48_894;
/** OpenAI's file holds 262,144 merges (262,145 lines with the header) although only the first 48,894 are used; a file
 * this long is taken as it. */
const OPENAI_FILE_MIN_MERGES = 262_144;
export const START_OF_TEXT = "<|startoftext|>";
export const END_OF_TEXT = "<|endoftext|>";
const END_OF_WORD = "</w>";

/**
 * How an over-long caption is cut to the context length (docs/parity.md#tokenizer-truncation):
 * "keep-eot" cuts and puts EOT in the last slot (OpenCLIP), so EOT pooling still finds the end of the text;
 * "official" reproduces the official plain cut, which drops EOT.
 */
export type Truncation = "keep-eot" | "official";
export const TRUNCATIONS: readonly Truncation[] = ["keep-eot", "official"];

/** A merges file that cannot be read as one. */
export class BpeFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BpeFileError";
  }
}

// ---- byte-level alphabet ------------------------------------------------------------------------------------------

/**
 * GPT-2/CLIP `bytes_to_unicode`: every byte gets a printable character, so BPE works on strings without whitespace or
 * control characters. Bytes 33–126, 161–172, 174–255 keep their code point; the other 68 bytes, in increasing order,
 * become U+0100 + n. The Map's insertion order is the table order, which is also the order of the first 256 ids.
 */
export function bytesToUnicode(): Map<number, string> {
  const printable: number[] = [];
  for (const [lo, hi] of [[33, 126], [161, 172], [174, 255]]) for (let b = lo; b <= hi; b++) printable.push(b);
  const table = new Map<number, string>(printable.map((b) => [b, String.fromCharCode(b)]));
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!table.has(b)) table.set(b, String.fromCharCode(256 + n++));
  }
  return table;
}

const BYTE_ENCODER: string[] = (() => {
  const out = new Array<string>(256);
  for (const [b, c] of bytesToUnicode()) out[b] = c;
  return out;
})();
const BYTE_DECODER = new Map<string, number>(BYTE_ENCODER.map((c, b) => [c, b]));
const utf8 = new TextEncoder();
const PRINTABLE_ASCII_RE = /^[\x21-\x7e]*$/;

/** A pre-token's UTF-8 bytes spelled in the byte-level alphabet (every character is in the BMP, one code unit). */
export function byteEncode(token: string): string {
  if (PRINTABLE_ASCII_RE.test(token)) return token; // bytes 33..126 map to themselves
  let out = "";
  for (const b of utf8.encode(token)) out += BYTE_ENCODER[b];
  return out;
}

// ---- ftfy subset ---------------------------------------------------------------------------------------------------

// Windows-1252 for 0x80..0x9F; the five bytes it leaves undefined keep their code point ("sloppy" windows-1252, which
// is also what Python's html.unescape uses for &#128;..&#159;).
const CP1252_C1 = [
  0x20ac,
  0x81,
  0x201a,
  0x192,
  0x201e,
  0x2026,
  0x2020,
  0x2021,
  0x2c6,
  0x2030,
  0x160,
  0x2039,
  0x152,
  0x8d,
  0x17d,
  0x8f,
  0x90,
  0x2018,
  0x2019,
  0x201c,
  0x201d,
  0x2022,
  0x2013,
  0x2014,
  0x2dc,
  0x2122,
  0x161,
  0x203a,
  0x153,
  0x9d,
  0x17e,
  0x178,
].map((cp) => String.fromCodePoint(cp));

const LIGATURES: Record<string, string> = {
  "Ĳ": "IJ",
  "ĳ": "ij",
  "ŉ": "ʼn",
  "Ǳ": "DZ",
  "ǲ": "Dz",
  "ǳ": "dz",
  "Ǆ": "DŽ",
  "ǅ": "Dž",
  "ǆ": "dž",
  "Ǉ": "LJ",
  "ǈ": "Lj",
  "ǉ": "lj",
  "Ǌ": "NJ",
  "ǋ": "Nj",
  "ǌ": "nj",
  "ﬀ": "ff",
  "ﬁ": "fi",
  "ﬂ": "fl",
  "ﬃ": "ffi",
  "ﬄ": "ffl",
  "ﬅ": "ſt",
  "ﬆ": "st",
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join("")}]`, "gu");
const WIDTH_RE = /[\u3000\uff01-\uffef]/g;
const SINGLE_QUOTE_RE = /[\u02bc\u2018-\u201b]/g;
const DOUBLE_QUOTE_RE = /[\u201c-\u201f]/g;
const C1_RE = /[\x80-\x9f]/g;
// Python's \d in ftfy's ANSI_RE is Unicode-aware, hence \p{Nd}.
// deno-lint-ignore no-control-regex -- deliberate: ftfy removes these escape sequences
const ANSI_RE = /\x1b\[(?:\p{Nd}|;)*[a-zA-Z]/gu;
// deno-lint-ignore no-control-regex -- deliberate: the set is ftfy's (or Python's) exactly
const CONTROL_RE = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;

function fixWidth(char: string): string {
  if (char === "\u3000") return " ";
  return char.normalize("NFKC");
}

// Printable ASCII plus tab and newline: nothing in fixSegment changes such text (when it has no '&' to unescape).
const PLAIN_RE = /^[\x20-\x7e\t\n]*$/;
const LINE_BREAK_RE = /\r\n|[\r\u2028\u2029\x85]/g;
// Matches wherever one of fixSegment's regex steps would: a text it does not match, that is well-formed UTF-16 and
// already NFC, is a fixed point of the loop's first pass, so fixSegment returns it unchanged without running the steps.
const FIX_TRIGGER_RE = new RegExp(
  [C1_RE, LIGATURE_RE, WIDTH_RE, SINGLE_QUOTE_RE, DOUBLE_QUOTE_RE, LINE_BREAK_RE, ANSI_RE, CONTROL_RE]
    .map((re) => re.source).join("|"),
  "u",
);

/** The ftfy.fix_text subset described at the top of this file. */
export function fixText(text: string): string {
  if (PLAIN_RE.test(text) && !text.includes("&")) return text;
  // One line (the common case) is what the split below would give for it.
  if (!text.includes("\n")) return fixSegment(text, !text.includes("<"));
  let unescape = true;
  let out = "";
  // ftfy fixes line by line, and once a line holds '<' it stops unescaping for the rest of the text.
  for (const line of text.match(/[^\n]*\n|[^\n]+$/g) ?? []) {
    if (line.includes("<")) unescape = false;
    out += fixSegment(line, unescape);
  }
  return out;
}

function fixSegment(text: string, unescape: boolean): string {
  if (PLAIN_RE.test(text) && !(unescape && text.includes("&"))) return text;
  if (
    !(unescape && text.includes("&")) && !FIX_TRIGGER_RE.test(text) && text.isWellFormed() &&
    text.normalize("NFC") === text
  ) return text;
  for (;;) {
    const before = text;
    if (unescape) text = text.replace(/&#?[0-9A-Za-z]{1,24};/g, unescapeStrictEntity);
    text = text.replace(C1_RE, (c) => CP1252_C1[c.charCodeAt(0) - 0x80]);
    text = text.replace(LIGATURE_RE, (c) => LIGATURES[c]);
    text = text.replace(WIDTH_RE, fixWidth);
    text = text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
    text = text.replace(LINE_BREAK_RE, "\n");
    text = text.toWellFormed();
    text = text.replace(ANSI_RE, "").replace(CONTROL_RE, "");
    text = text.normalize("NFC");
    if (text === before) return text;
  }
}

// ---- HTML entities ---------------------------------------------------------------------------------------------------

// name → code point (hex). Generated from Python's html.entities (name2codepoint ∪ apos ∪ legacy names ∪ TRADE).
const ENTITY_TABLE = `
AElig c6 AMP 26 Aacute c1 Acirc c2 Agrave c0 Alpha 391 Aring c5 Atilde c3 Auml c4 Beta 392 COPY a9
Ccedil c7 Chi 3a7 Dagger 2021 Delta 394 ETH d0 Eacute c9 Ecirc ca Egrave c8 Epsilon 395 Eta 397
Euml cb GT 3e Gamma 393 Iacute cd Icirc ce Igrave cc Iota 399 Iuml cf Kappa 39a LT 3c Lambda 39b
Mu 39c Ntilde d1 Nu 39d OElig 152 Oacute d3 Ocirc d4 Ograve d2 Omega 3a9 Omicron 39f Oslash d8
Otilde d5 Ouml d6 Phi 3a6 Pi 3a0 Prime 2033 Psi 3a8 QUOT 22 REG ae Rho 3a1 Scaron 160 Sigma 3a3
THORN de TRADE 2122 Tau 3a4 Theta 398 Uacute da Ucirc db Ugrave d9 Upsilon 3a5 Uuml dc Xi 39e
Yacute dd Yuml 178 Zeta 396 aacute e1 acirc e2 acute b4 aelig e6 agrave e0 alefsym 2135 alpha 3b1
amp 26 and 2227 ang 2220 apos 27 aring e5 asymp 2248 atilde e3 auml e4 bdquo 201e beta 3b2 brvbar a6
bull 2022 cap 2229 ccedil e7 cedil b8 cent a2 chi 3c7 circ 2c6 clubs 2663 cong 2245 copy a9
crarr 21b5 cup 222a curren a4 dArr 21d3 dagger 2020 darr 2193 deg b0 delta 3b4 diams 2666 divide f7
eacute e9 ecirc ea egrave e8 empty 2205 emsp 2003 ensp 2002 epsilon 3b5 equiv 2261 eta 3b7 eth f0
euml eb euro 20ac exist 2203 fnof 192 forall 2200 frac12 bd frac14 bc frac34 be frasl 2044 gamma 3b3
ge 2265 gt 3e hArr 21d4 harr 2194 hearts 2665 hellip 2026 iacute ed icirc ee iexcl a1 igrave ec
image 2111 infin 221e int 222b iota 3b9 iquest bf isin 2208 iuml ef kappa 3ba lArr 21d0 lambda 3bb
lang 27e8 laquo ab larr 2190 lceil 2308 ldquo 201c le 2264 lfloor 230a lowast 2217 loz 25ca lrm 200e
lsaquo 2039 lsquo 2018 lt 3c macr af mdash 2014 micro b5 middot b7 minus 2212 mu 3bc nabla 2207
nbsp a0 ndash 2013 ne 2260 ni 220b not ac notin 2209 nsub 2284 ntilde f1 nu 3bd oacute f3 ocirc f4
oelig 153 ograve f2 oline 203e omega 3c9 omicron 3bf oplus 2295 or 2228 ordf aa ordm ba oslash f8
otilde f5 otimes 2297 ouml f6 para b6 part 2202 permil 2030 perp 22a5 phi 3c6 pi 3c0 piv 3d6
plusmn b1 pound a3 prime 2032 prod 220f prop 221d psi 3c8 quot 22 rArr 21d2 radic 221a rang 27e9
raquo bb rarr 2192 rceil 2309 rdquo 201d real 211c reg ae rfloor 230b rho 3c1 rlm 200f rsaquo 203a
rsquo 2019 sbquo 201a scaron 161 sdot 22c5 sect a7 shy ad sigma 3c3 sigmaf 3c2 sim 223c spades 2660
sub 2282 sube 2286 sum 2211 sup 2283 sup1 b9 sup2 b2 sup3 b3 supe 2287 szlig df tau 3c4 there4 2234
theta 3b8 thetasym 3d1 thinsp 2009 thorn fe tilde 2dc times d7 trade 2122 uArr 21d1 uacute fa
uarr 2191 ucirc fb ugrave f9 uml a8 upsih 3d2 upsilon 3c5 uuml fc weierp 2118 xi 3be yacute fd
yen a5 yuml ff zeta 3b6 zwj 200d zwnj 200c`;

// The HTML5 names a browser (and Python) also accepts without the ';'.
const LEGACY_ENTITY_NAMES = `
AElig AMP Aacute Acirc Agrave Aring Atilde Auml COPY Ccedil ETH Eacute Ecirc Egrave Euml GT Iacute
Icirc Igrave Iuml LT Ntilde Oacute Ocirc Ograve Oslash Otilde Ouml QUOT REG THORN Uacute Ucirc
Ugrave Uuml Yacute aacute acirc acute aelig agrave amp aring atilde auml brvbar ccedil cedil cent
copy curren deg divide eacute ecirc egrave eth euml frac12 frac14 frac34 gt iacute icirc iexcl
igrave iquest iuml laquo lt macr micro middot nbsp not ntilde oacute ocirc ograve ordf ordm oslash
otilde ouml para plusmn pound quot raquo reg sect shy sup1 sup2 sup3 szlig thorn times uacute ucirc
ugrave uml uuml yacute yen yuml`;

/** Python's html5 dict restricted to the subset: "name;" for every name, "name" for the legacy ones. */
const HTML_ENTITIES: Map<string, string> = (() => {
  const fields = ENTITY_TABLE.trim().split(/\s+/);
  const byName = new Map<string, string>();
  for (let i = 0; i < fields.length; i += 2) byName.set(fields[i], String.fromCodePoint(parseInt(fields[i + 1], 16)));
  const entities = new Map<string, string>();
  for (const [name, char] of byName) entities.set(name + ";", char);
  for (const name of LEGACY_ENTITY_NAMES.trim().split(/\s+/)) entities.set(name, byName.get(name)!);
  return entities;
})();

/** ftfy's table: "&name;" plus upper-cased aliases of lower-case names whose upper-case form is not an entity. */
const FTFY_ENTITIES: Map<string, string> = (() => {
  const out = new Map<string, string>();
  for (const [key, char] of HTML_ENTITIES) {
    if (!key.endsWith(";")) continue;
    out.set("&" + key, char);
    const upper = key.toUpperCase();
    if (key === key.toLowerCase() && !HTML_ENTITIES.has(upper)) out.set("&" + upper, char.toUpperCase());
  }
  return out;
})();

function unescapeStrictEntity(entity: string): string {
  const named = FTFY_ENTITIES.get(entity);
  if (named !== undefined) return named;
  // ftfy keeps a numeric reference only when Python's unescape consumes all of it, semicolon included.
  if (/^&#(?:[0-9]+|[xX][0-9a-fA-F]+);$/.test(entity)) return numericReference(entity.slice(1, -1));
  return entity;
}

// Python's html._invalid_charrefs outside 0x80..0x9F, and the code points html._invalid_codepoints drops.
const INVALID_CHARREFS = new Map<number, string>([[0x00, "\ufffd"], [0x0d, "\r"]]);

function isInvalidCodepoint(cp: number): boolean {
  return (cp >= 0x1 && cp <= 0x8) || cp === 0xb || (cp >= 0xe && cp <= 0x1f) || (cp >= 0x7f && cp <= 0x9f) ||
    (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe;
}

/** Python's html._replace_charref for "#123" / "#x7b" (the '#' included, any ';' removed). */
function numericReference(ref: string): string {
  const hex = ref[1] === "x" || ref[1] === "X";
  const digits = ref.slice(hex ? 2 : 1).replace(/^0+/, "");
  // Anything longer than 7 significant digits is past U+10FFFF; parseInt would lose precision on huge inputs.
  const cp = digits.length > 7 ? Infinity : digits.length === 0 ? 0 : parseInt(digits, hex ? 16 : 10);
  if (cp >= 0x80 && cp <= 0x9f) return CP1252_C1[cp - 0x80];
  const fixed = INVALID_CHARREFS.get(cp);
  if (fixed !== undefined) return fixed;
  if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return "\ufffd";
  if (isInvalidCodepoint(cp)) return "";
  return String.fromCodePoint(cp);
}

const CHARREF_RE = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

/** Python's `html.unescape`, over the entity subset. */
export function htmlUnescape(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(CHARREF_RE, (_match, ref: string) => {
    if (ref[0] === "#") return numericReference(ref.endsWith(";") ? ref.slice(0, -1) : ref);
    const whole = HTML_ENTITIES.get(ref);
    if (whole !== undefined) return whole;
    // The longest legacy name that prefixes the reference, as the HTML5 tokenizer does ("&ampx" → "&x").
    for (let x = ref.length - 1; x > 1; x--) {
      const char = HTML_ENTITIES.get(ref.slice(0, x));
      if (char !== undefined) return char + ref.slice(x);
    }
    return "&" + ref;
  });
}

// ---- caption cleaning and pre-tokenising ---------------------------------------------------------------------------

// Python's str.strip() removes str.isspace() characters: Unicode White_Space plus the separators U+001C..U+001F.
// deno-lint-ignore no-control-regex -- deliberate: the set is ftfy's (or Python's) exactly
const STRIP_RE = /^[\p{White_Space}\x1c-\x1f]+|[\p{White_Space}\x1c-\x1f]+$/gu;
// The `regex` module's \s, used by OpenAI's whitespace_clean and pattern, is exactly \p{White_Space} (JS's \s is not:
// it adds U+FEFF and lacks U+0085).
const WHITESPACE_RUN_RE = /\p{White_Space}+/gu;
const PRE_TOKEN_RE =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\p{White_Space}\p{L}\p{N}]+/giu;

function pythonStrip(text: string): string {
  return text.replace(STRIP_RE, "");
}

/** OpenAI's `whitespace_clean(basic_clean(text)).lower()`, with `fixText` in place of ftfy. */
export function cleanCaption(text: string): string {
  const basic = pythonStrip(htmlUnescape(htmlUnescape(fixText(text))));
  return pythonStrip(basic.replace(WHITESPACE_RUN_RE, " ")).toLowerCase();
}

// U+0345 COMBINING GREEK YPOGEGRAMMENI is matched by none of the pattern's alternatives in Python's `regex` module: it
// is not \p{L}, and IGNORECASE keeps it out of [^\s\p{L}\p{N}] because it case-folds to the letter ι. So it separates
// pre-tokens and is dropped, as whitespace is. JavaScript's /iu takes it for a letter (it canonicalises to ι), and no
// /iu construct tells it from ι, so it becomes a space first. Found by the parity test with OpenAI's code over every
// assigned code point (tests/tokenizer_test.ts), where it is the only one the two engines class differently.
const YPOGEGRAMMENI_RE = /\u0345/g;

/** The pre-tokens of an already cleaned caption, in order: specials, contractions, letter runs, single digits, and
 * runs of everything else but whitespace (and U+0345, which no alternative matches). */
export function splitWords(cleanText: string): string[] {
  return cleanText.replace(YPOGEGRAMMENI_RE, " ").match(PRE_TOKEN_RE) ?? [];
}

// ---- the fast pre-tokeniser -----------------------------------------------------------------------------------------
//
// `splitWords(cleanCaption(text))` runs five regular expressions over every caption. The tokenizer instead lower-cases
// the fixed and unescaped text, `htmlUnescape(htmlUnescape(fixText(text))).toLowerCase()`, and scans it once, char
// code by char code, for the same pre-tokens. Why that is exact:
//   - cleanCaption's remaining steps are the two strips and the collapse of whitespace runs to one space. No
//     alternative of PRE_TOKEN_RE matches or contains a White_Space character, and ' ' is one too, so the regex finds
//     the same pre-tokens whether whitespace runs are collapsed, stripped or left as they are: the scanner skips them.
//   - Lower-casing before or after those steps gives the same text: lower-case mappings neither make nor take
//     whitespace, and the one context-dependent mapping (final sigma) looks through case-ignorable characters only,
//     which whitespace is not, so a run of spaces or the end of the text are the same context for it.
//   - The character classes are PRE_TOKEN_RE's own, found by testing each code point against its alternatives with
//     its flags (so case-insensitive matching is included) and remembered in a table.
//   - Two things the scanner does not reproduce, so a caption holding them goes the regex way: U+001C..U+001F, which
//     Python's strip removes at the ends but which are not whitespace inside a caption (fixText removes them, so they
//     cannot reach here anyway), and U+017F 'ſ', which the case-insensitive regex matches as 's' in "'s" and in
//     "<|startoftext|>" (U+212A 'K', the other non-ASCII character folding to ASCII, is lower-cased to 'k' first).

const CLASS_SKIP = 1; // matched by no alternative: whitespace, skipped between pre-tokens
const CLASS_LETTER = 2; // \p{L}: runs
const CLASS_NUMBER = 3; // \p{N}: one code point per pre-token
const CLASS_OTHER = 4; // neither whitespace, letter nor number: runs ("'" and '<' also start contractions and specials)
const CLASS_REGEX = 5; // left to the regex path (see above)

const LETTER_RE = /^\p{L}$/iu;
const NUMBER_RE = /^\p{N}$/iu;
const OTHER_RE = /^[^\p{White_Space}\p{L}\p{N}]$/iu;

/** The class of a code point under PRE_TOKEN_RE (first alternative that can match it, in the regex's order). */
function preTokenClass(codePoint: number): number {
  if (codePoint === 0x17f || (codePoint >= 0x1c && codePoint <= 0x1f)) return CLASS_REGEX;
  if (codePoint === 0x345) return CLASS_SKIP; // matched by no alternative in OpenAI's regex (see splitWords)
  const char = String.fromCodePoint(codePoint);
  if (LETTER_RE.test(char)) return CLASS_LETTER;
  if (NUMBER_RE.test(char)) return CLASS_NUMBER;
  if (OTHER_RE.test(char)) return CLASS_OTHER;
  return CLASS_SKIP;
}

// Classes of the BMP code units (0 = not looked up yet; lone surrogates are one code point each, as under /u) and of
// the code points above it that have been seen.
const BMP_CLASSES = new Uint8Array(0x10000);
for (let c = 0; c < 0x80; c++) BMP_CLASSES[c] = preTokenClass(c);
const ASTRAL_CLASSES = new Map<number, number>();

/** The class of the code point at `i`, plus 16 when it takes two code units (a surrogate pair). */
function classAt(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
    const low = text.charCodeAt(i + 1);
    if (low >= 0xdc00 && low <= 0xdfff) {
      const codePoint = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
      let cls = ASTRAL_CLASSES.get(codePoint);
      if (cls === undefined) ASTRAL_CLASSES.set(codePoint, cls = preTokenClass(codePoint));
      return cls + 16;
    }
  }
  return BMP_CLASSES[c] || (BMP_CLASSES[c] = preTokenClass(c));
}

const PRE_TOKEN_WORD = 0, PRE_TOKEN_SOT = 1, PRE_TOKEN_EOT = 2;

/** Pre-token boundaries as (start, end, kind) triples; grown as needed, reused across captions. */
let preTokenBounds = new Int32Array(3 * 128);

/**
 * Finds PRE_TOKEN_RE's matches in `lower` (a caption after fixText, html.unescape and lower-casing; whitespace not yet
 * collapsed) and writes them to `preTokenBounds`. Returns how many, or -1 when the text holds a character left to the
 * regex path.
 */
function scanPreTokens(lower: string): number {
  const n = lower.length;
  let count = 0;
  for (let i = 0; i < n;) {
    const c = lower.charCodeAt(i);
    let packed = c < 0x80 ? BMP_CLASSES[c] : classAt(lower, i);
    const cls = packed & 15;
    if (cls === CLASS_SKIP) {
      i += packed < 16 ? 1 : 2;
      continue;
    }
    if (cls === CLASS_REGEX) return -1;
    let end = i + (packed < 16 ? 1 : 2), kind = PRE_TOKEN_WORD, contraction = 0;
    if (c === 0x3c && lower.startsWith(START_OF_TEXT, i)) { // '<': the alternatives are tried in order
      end = i + START_OF_TEXT.length;
      kind = PRE_TOKEN_SOT;
    } else if (c === 0x3c && lower.startsWith(END_OF_TEXT, i)) {
      end = i + END_OF_TEXT.length;
      kind = PRE_TOKEN_EOT;
    } else if (c === 0x27 && (contraction = contractionLength(lower, i)) > 0) { // "'"
      end = i + contraction;
    } else if (cls === CLASS_LETTER || cls === CLASS_OTHER) { // a run of the same class, code point by code point
      while (end < n) {
        const next = lower.charCodeAt(end);
        packed = next < 0x80 ? BMP_CLASSES[next] : classAt(lower, end);
        if ((packed & 15) !== cls) break;
        end += packed < 16 ? 1 : 2;
      }
    } // CLASS_NUMBER: the single code point
    if (3 * count + 3 > preTokenBounds.length) {
      const grown = new Int32Array(2 * preTokenBounds.length);
      grown.set(preTokenBounds);
      preTokenBounds = grown;
    }
    preTokenBounds[3 * count] = i;
    preTokenBounds[3 * count + 1] = end;
    preTokenBounds[3 * count + 2] = kind;
    count++;
    i = end;
  }
  return count;
}

/** Length of the contraction ('s 't 're 've 'm 'll 'd) starting at the "'" at `i`, or 0. */
function contractionLength(text: string, i: number): number {
  const next = text.charCodeAt(i + 1); // NaN past the end
  if (next === 0x73 || next === 0x74 || next === 0x6d || next === 0x64) return 2; // s t m d
  const third = text.charCodeAt(i + 2);
  if ((next === 0x72 || next === 0x76) && third === 0x65) return 3; // re ve
  if (next === 0x6c && third === 0x6c) return 3; // ll
  return 0;
}

/** fixText and html.unescape twice, then lower case: the text scanPreTokens reads. */
function fixedLowerCase(text: string): string {
  return htmlUnescape(htmlUnescape(fixText(text))).toLowerCase();
}

/** The pre-tokens of a caption found by the scanner, or null for a caption it leaves to the regex path. Equal to
 * `splitWords(cleanCaption(text))` whenever not null; exported to test exactly that. */
export function scanWords(text: string): string[] | null {
  const lower = fixedLowerCase(text);
  const count = scanPreTokens(lower);
  if (count < 0) return null;
  const words: string[] = [];
  for (let k = 0; k < count; k++) words.push(lower.slice(preTokenBounds[3 * k], preTokenBounds[3 * k + 1]));
  return words;
}

// ---- merges files ----------------------------------------------------------------------------------------------------

/**
 * Reads a merges file (gzip detected by its magic bytes, so the name does not matter). The first line is a header and
 * is skipped whatever it holds, as OpenAI's reader does: the copies of bpe_simple_vocab_16e6.txt.gz that ship in
 * OpenAI's CLIP, SLIP and DetailCLIP repositories begin `"bpe_simple_vocab_16e6.txt#version: 0.2`, ours `#version: 0.2`.
 * `mergeCount` limits how many merges are used; by default all of them, except for a file shaped like OpenAI's
 * bpe_simple_vocab_16e6 (≥ 262,144 merge lines), of which OpenAI's code uses only the first 48,894.
 */
export function readMerges(path: string, options: { mergeCount?: number } = {}): string[] {
  let bytes: Uint8Array;
  try {
    // A FIFO or a device (`--bpe /dev/zero`) is refused unread; a file or its gunzipped text above the cap, too.
    bytes = readInputFile(path, `merges file ${path}`, INPUT_CAPS.merges);
  } catch (error) {
    throw new BpeFileError(
      error instanceof InputFileError ? error.message : `cannot read merges file ${path}: ${(error as Error).message}`,
    );
  }
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes, { maxOutputLength: INPUT_CAPS.merges });
    } catch (error) {
      throw new BpeFileError(
        `merges file ${path} is not valid gzip or unpacks to more than ${INPUT_CAPS.merges} bytes: ` +
          (error as Error).message,
      );
    }
  }
  if (bytes.length === 0) throw new BpeFileError(`merges file ${path} is empty`);
  const lines = new TextDecoder().decode(bytes).split("\n");
  while (lines.length > 1 && lines[lines.length - 1].trim() === "") lines.pop();
  const available = lines.length - 1;
  let count = available >= OPENAI_FILE_MIN_MERGES ? OPENAI_MERGE_COUNT : available;
  if (options.mergeCount !== undefined) {
    if (!Number.isInteger(options.mergeCount) || options.mergeCount < 0 || options.mergeCount > available) {
      throw new BpeFileError(`merges file ${path} holds ${available} merges; cannot use ${options.mergeCount}`);
    }
    count = options.mergeCount;
  }
  const merges: string[] = [];
  for (let i = 1; i <= count; i++) {
    const parts = lines[i].trim().split(/\s+/);
    if (parts.length !== 2 || parts[0] === "") {
      throw new BpeFileError(
        `merges file ${path}, line ${i + 1}: expected two symbols separated by a space, found ${
          JSON.stringify(lines[i])
        }`,
      );
    }
    merges.push(parts[0] + " " + parts[1]);
  }
  return merges;
}

// ---- the tokenizer ---------------------------------------------------------------------------------------------------

export interface TokenizeOptions {
  truncation?: Truncation;
}

/** Padded rows of ids plus which captions were cut (the official code prints a warning for those). */
export interface TokenizedRows {
  ids: number[][];
  truncated: number[];
}

// OpenAI's cache is unbounded; a training run over millions of distinct words would grow it without limit, so it is
// dropped whenever it reaches this size (the hit rate on caption text stays high).
const CACHE_LIMIT = 1 << 18;

/**
 * Merge ranks keyed by the pair of symbol ids, in open addressing over typed arrays. Symbols are vocabulary ids
 * rather than strings: every symbol a word can hold is a vocabulary string (a byte character, one with '</w>', or
 * the concatenation of a ranked pair), and the vocabulary maps each distinct string to one id, so comparing ids is
 * comparing strings. (A Map keyed by left * vocabSize + right would leave V8's small integers above ~32k symbols.)
 */
class PairRanks {
  readonly #mask: number;
  readonly #left: Int32Array;
  readonly #right: Int32Array;
  readonly #rank: Int32Array;

  constructor(pairs: number) {
    let size = 16;
    while (size < 2 * pairs) size *= 2;
    this.#mask = size - 1;
    this.#left = new Int32Array(size).fill(-1);
    this.#right = new Int32Array(size);
    this.#rank = new Int32Array(size);
  }

  #slot(left: number, right: number): number {
    const h = Math.imul(left ^ Math.imul(right, 0x85ebca6b), 0x9e3779b1);
    let slot = (h ^ (h >>> 15)) & this.#mask;
    while (this.#left[slot] !== -1 && (this.#left[slot] !== left || this.#right[slot] !== right)) {
      slot = (slot + 1) & this.#mask;
    }
    return slot;
  }

  /** A repeated pair keeps its last rank, as Python's dict(zip(merges, range(...))) does. */
  set(left: number, right: number, rank: number): void {
    const slot = this.#slot(left, right);
    this.#left[slot] = left;
    this.#right[slot] = right;
    this.#rank[slot] = rank;
  }

  /** The pair's rank, or -1 when it is not a merge. */
  get(left: number, right: number): number {
    const slot = this.#slot(left, right);
    return this.#left[slot] === -1 ? -1 : this.#rank[slot];
  }
}

/**
 * OpenAI's per-word cache (pre-token → ids), looked up by the pre-token's characters where they lie in the caption, so
 * a hit costs no substring, no string hashing and no array: FNV-1a over the char codes, open addressing, keys compared
 * char by char, ids copied out of one pool. Dropped whole at CACHE_LIMIT entries.
 */
class WordCache {
  #slots = new Int32Array(1 << 12); // entry + 1; 0 is empty
  #entries = 0;
  #hash = new Int32Array(1 << 11);
  #keyAt = new Int32Array(1 << 11);
  #keyLength = new Int32Array(1 << 11);
  #idAt = new Int32Array(1 << 11);
  #idLength = new Int32Array(1 << 11);
  #keys = new Uint16Array(1 << 14);
  #keysUsed = 0;
  /** The ids of every entry, back to back. */
  ids = new Int32Array(1 << 14);
  #idsUsed = 0;

  static hash(text: string, start: number, end: number): number {
    let hash = 0x811c9dc5 | 0;
    for (let i = start; i < end; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
    return hash;
  }

  /** The entry holding text[start, end), or -1. */
  find(text: string, start: number, end: number, hash: number): number {
    const mask = this.#slots.length - 1, length = end - start;
    for (let slot = hash & mask;; slot = (slot + 1) & mask) {
      const entry = this.#slots[slot] - 1;
      if (entry < 0) return -1;
      if (this.#hash[entry] !== hash || this.#keyLength[entry] !== length) continue;
      const at = this.#keyAt[entry];
      let same = true;
      for (let i = 0; i < length && same; i++) same = this.#keys[at + i] === text.charCodeAt(start + i);
      if (same) return entry;
    }
  }

  idAt(entry: number): number {
    return this.#idAt[entry];
  }

  idLength(entry: number): number {
    return this.#idLength[entry];
  }

  /** Adds text[start, end) → ids (not present yet) and returns its entry. */
  add(text: string, start: number, end: number, hash: number, ids: readonly number[]): number {
    if (this.#entries >= CACHE_LIMIT) this.#clear();
    if (this.#entries === this.#hash.length) this.#growEntries();
    if (2 * (this.#entries + 1) > this.#slots.length) this.#rehash(2 * this.#slots.length);
    const length = end - start;
    while (this.#keysUsed + length > this.#keys.length) this.#keys = grown(this.#keys);
    while (this.#idsUsed + ids.length > this.ids.length) this.ids = grown(this.ids);
    const entry = this.#entries++;
    this.#hash[entry] = hash;
    this.#keyAt[entry] = this.#keysUsed;
    this.#keyLength[entry] = length;
    for (let i = 0; i < length; i++) this.#keys[this.#keysUsed++] = text.charCodeAt(start + i);
    this.#idAt[entry] = this.#idsUsed;
    this.#idLength[entry] = ids.length;
    for (const id of ids) this.ids[this.#idsUsed++] = id;
    this.#place(entry);
    return entry;
  }

  #place(entry: number): void {
    const mask = this.#slots.length - 1;
    let slot = this.#hash[entry] & mask;
    while (this.#slots[slot] !== 0) slot = (slot + 1) & mask;
    this.#slots[slot] = entry + 1;
  }

  #rehash(size: number): void {
    this.#slots = new Int32Array(size);
    for (let entry = 0; entry < this.#entries; entry++) this.#place(entry);
  }

  #growEntries(): void {
    this.#hash = grown(this.#hash);
    this.#keyAt = grown(this.#keyAt);
    this.#keyLength = grown(this.#keyLength);
    this.#idAt = grown(this.#idAt);
    this.#idLength = grown(this.#idLength);
  }

  #clear(): void {
    this.#slots.fill(0);
    this.#entries = this.#keysUsed = this.#idsUsed = 0;
  }
}

/** A copy of `array` twice as long. */
function grown<T extends Int32Array | Uint16Array>(array: T): T {
  const out = new (array.constructor as { new (length: number): T })(2 * array.length);
  out.set(array);
  return out;
}

/** CLIP's byte-level BPE tokenizer: OpenAI's vocabulary (`fromFile`) or learned merges; `tokenize` encodes a batch. */
export class ClipTokenizer {
  readonly #ranks: PairRanks;
  /** The id of the symbol each merge makes, by rank. */
  readonly #mergedId: Int32Array;
  /** The id of each byte's symbol, and of the byte's symbol with '</w>' (a word's last byte). */
  readonly #byteId = new Int32Array(256);
  readonly #byteEndId = new Int32Array(256);
  readonly #decoder: string[];
  readonly #sot: number;
  readonly #eot: number;
  readonly #cache = new WordCache();
  /** The ids of the caption being encoded (#ids[0..#count)), reused across captions. */
  #ids = new Int32Array(256);
  #count = 0;
  /** The merges in rank order, as given (checkpoints store them, so a run's tokenizer travels with its weights). */
  readonly merges: readonly string[];

  /** `merges` are "a b" strings in rank order (line 2 onwards of a merges file). */
  constructor(merges: readonly string[]) {
    this.merges = [...merges];
    const bytes = [...bytesToUnicode().values()];
    const vocab = [...bytes, ...bytes.map((c) => c + END_OF_WORD)];
    const pairs = merges.map((merge, rank) => {
      const parts = merge.split(" ");
      if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
        throw new BpeFileError(`merge ${rank}: expected "a b", got ${JSON.stringify(merge)}`);
      }
      vocab.push(parts[0] + parts[1]);
      return parts;
    });
    vocab.push(START_OF_TEXT, END_OF_TEXT);
    // Python's dict(zip(vocab, ...)) keeps the last id of a repeated string.
    const encoder = new Map<string, number>();
    vocab.forEach((token, id) => encoder.set(token, id));
    this.#ranks = new PairRanks(merges.length);
    this.#mergedId = new Int32Array(merges.length);
    pairs.forEach(([left, right], rank) => {
      this.#mergedId[rank] = encoder.get(left + right)!;
      const leftId = encoder.get(left), rightId = encoder.get(right);
      // A side that is no vocabulary string never occurs in a word, and neither does the pair.
      if (leftId !== undefined && rightId !== undefined) this.#ranks.set(leftId, rightId, rank);
    });
    for (let b = 0; b < 256; b++) {
      this.#byteId[b] = encoder.get(BYTE_ENCODER[b])!;
      this.#byteEndId[b] = encoder.get(BYTE_ENCODER[b] + END_OF_WORD)!;
    }
    this.#decoder = vocab;
    this.#sot = vocab.length - 2;
    this.#eot = vocab.length - 1;
  }

  /** Loads a merges file (see `readMerges` for which merges are used). */
  static fromFile(path: string, options: { mergeCount?: number } = {}): ClipTokenizer {
    return new ClipTokenizer(readMerges(path, options));
  }

  get sotId(): number {
    return this.#sot;
  }

  get eotId(): number {
    return this.#eot;
  }

  /** Rows of the token embedding: 512 byte tokens + merges + 2 specials (49,408 for OpenAI's file). */
  get vocabSize(): number {
    return this.#decoder.length;
  }

  /** The BPE ids of a caption, without SOT/EOT. Special-token text in the caption maps to the special ids, as in
   * OpenAI's code (its BPE cache is seeded with them). */
  encode(text: string): number[] {
    this.#encodeCaption(text, Infinity);
    return Array.from(this.#ids.subarray(0, this.#count));
  }

  /** OpenAI's decode: concatenate the token strings, map characters back to bytes, UTF-8 decode with replacement,
   * and turn each '</w>' into a space. */
  decode(ids: readonly number[]): string {
    let text = "";
    for (const id of ids) {
      const token = Number.isInteger(id) ? this.#decoder[id] : undefined;
      if (token === undefined) {
        throw new RangeError(`decode: id ${id} is not in the vocabulary (size ${this.vocabSize})`);
      }
      text += token;
    }
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = BYTE_DECODER.get(text[i])!;
    return new TextDecoder().decode(bytes).replaceAll(END_OF_WORD, " ");
  }

  /** [SOT] + ids + [EOT] per caption, cut to `contextLength` (docs/parity.md#tokenizer-truncation) and zero-padded. */
  tokenizeRows(
    texts: readonly string[],
    contextLength: number = DEFAULT_CONTEXT_LENGTH,
    options: TokenizeOptions = {},
  ): TokenizedRows {
    const truncation = checkTokenizeArguments(contextLength, options);
    const truncated: number[] = [];
    const row = new Int32Array(contextLength);
    const ids = texts.map((text, i) => {
      const used = this.#encodeRow(text, contextLength, truncation, row);
      if (used < 0) truncated.push(i);
      const out = new Array<number>(contextLength).fill(0);
      for (let t = 0; t < Math.abs(used); t++) out[t] = row[t];
      return out;
    });
    return { ids, truncated };
  }

  /** The model's text input: (B, T) int64 for a list, (T,) for a single string, as OpenAI's `clip.tokenize`. */
  tokenize(
    texts: string | readonly string[],
    contextLength: number = DEFAULT_CONTEXT_LENGTH,
    options: TokenizeOptions = {},
  ): Tensor {
    const truncation = checkTokenizeArguments(contextLength, options);
    const list = typeof texts === "string" ? [texts] : texts;
    const flat = new BigInt64Array(list.length * contextLength);
    // Ids are small non-negative integers: write the low 32 bits of each little-endian int64 (no BigInt per id); the
    // rest of each row stays zero, the padding.
    const words = new Int32Array(flat.buffer);
    const row = new Int32Array(contextLength);
    for (let i = 0; i < list.length; i++) {
      const used = Math.abs(this.#encodeRow(list[i], contextLength, truncation, row));
      const base = 2 * i * contextLength;
      for (let t = 0; t < used; t++) words[base + 2 * t] = row[t];
    }
    const shape = typeof texts === "string" ? [contextLength] : [list.length, contextLength];
    return Tensor.fromArray(flat, shape, { dtype: "int64" });
  }

  /** Writes [SOT] + ids + [EOT], cut to `contextLength`, to the start of `row`: returns how many slots it filled,
   * negated when the caption was cut. */
  #encodeRow(text: string, contextLength: number, truncation: Truncation, row: Int32Array): number {
    // Ids past the first contextLength - 1 are cut anyway: stop encoding once there are that many.
    this.#encodeCaption(text, contextLength - 1);
    const ids = this.#ids, count = this.#count;
    row[0] = this.#sot;
    const kept = Math.min(count, contextLength - 1);
    for (let t = 0; t < kept; t++) row[t + 1] = ids[t];
    if (count + 2 <= contextLength) {
      row[count + 1] = this.#eot;
      return count + 2;
    }
    if (truncation === "keep-eot") row[contextLength - 1] = this.#eot;
    return -contextLength;
  }

  /** Sets #ids[0..#count) to the caption's ids (without SOT/EOT), stopping after the pre-token that reaches `limit`. */
  #encodeCaption(text: string, limit: number): void {
    this.#count = 0;
    const lower = fixedLowerCase(text);
    const count = scanPreTokens(lower);
    if (count < 0) { // a caption the scanner leaves to the regex path
      for (const word of splitWords(cleanCaption(text))) {
        if (word === START_OF_TEXT) this.#push(this.#sot);
        else if (word === END_OF_TEXT) this.#push(this.#eot);
        else this.#pushWord(word, 0, word.length, limit);
        if (this.#count >= limit) return;
      }
      return;
    }
    const bounds = preTokenBounds;
    for (let k = 0; k < count && this.#count < limit; k++) {
      const kind = bounds[3 * k + 2];
      if (kind === PRE_TOKEN_SOT) this.#push(this.#sot);
      else if (kind === PRE_TOKEN_EOT) this.#push(this.#eot);
      else this.#pushWord(lower, bounds[3 * k], bounds[3 * k + 1], limit);
    }
  }

  #push(id: number): void {
    if (this.#count === this.#ids.length) this.#grow();
    this.#ids[this.#count++] = id;
  }

  /** Appends the BPE ids of the pre-token text[start, end), from the cache or by running BPE on it. When only the
   * first `limit` ids are wanted (a row), a long pre-token is cut first (see MAX_PRE_TOKEN_CHARS). */
  #pushWord(text: string, start: number, end: number, limit = Infinity): void {
    end = preTokenEnd(text, start, end, limit);
    const cache = this.#cache, hash = WordCache.hash(text, start, end);
    let entry = cache.find(text, start, end, hash);
    if (entry < 0) entry = cache.add(text, start, end, hash, this.#bpe(text.slice(start, end)));
    const at = cache.idAt(entry), length = cache.idLength(entry), ids = cache.ids;
    while (this.#count + length > this.#ids.length) this.#grow();
    for (let k = 0; k < length; k++) this.#ids[this.#count++] = ids[at + k];
  }

  #grow(): void {
    this.#ids = grown(this.#ids);
  }

  /** OpenAI's `bpe()` on a pre-token (uncached; #pushWord holds the cache): merge the lowest-ranked adjacent pair,
   * every occurrence left to right, until none is ranked. */
  #bpe(preToken: string): number[] {
    const word = this.#byteSymbols(preToken);
    let length = word.length;
    while (length > 1) {
      let best = -1, bestRank = 0x7fffffff;
      for (let i = 0; i + 1 < length; i++) {
        const rank = this.#ranks.get(word[i], word[i + 1]);
        if (rank >= 0 && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      // `best` is the pair's first occurrence (strict < above), so the scan can start there. Merge in place: the write
      // position never passes the read position.
      const first = word[best], second = word[best + 1], merged = this.#mergedId[bestRank];
      let out = best;
      for (let i = best; i < length;) {
        if (word[i] === first && i + 1 < length && word[i + 1] === second) {
          word[out++] = merged;
          i += 2;
        } else {
          word[out++] = word[i++];
        }
      }
      length = out;
    }
    word.length = length;
    return word;
  }

  /** The pre-token's UTF-8 bytes as symbol ids, the last one with '</w>' (byteEncode, then the vocabulary). */
  #byteSymbols(preToken: string): number[] {
    const bytes = PRINTABLE_ASCII_RE.test(preToken) ? null : utf8.encode(preToken);
    const length = bytes === null ? preToken.length : bytes.length;
    const word = new Array<number>(length);
    for (let i = 0; i < length; i++) {
      const b = bytes === null ? preToken.charCodeAt(i) : bytes[i];
      word[i] = i === length - 1 ? this.#byteEndId[b] : this.#byteId[b];
    }
    return word;
  }
}

/**
 * The longest pre-token (a word without spaces) that BPE runs on when a row keeps only its first ids, in UTF-16 code
 * units: at least 1,000, or 16 per kept id for long contexts. BPE is quadratic in a word's length (a 1 MB word took
 * 77 s) and a row of context 77 keeps 75 ids, which no vocabulary token is long enough to spread over 1,000
 * characters, so a longer pre-token is cut (never inside a surrogate pair) and the row's ids are unchanged: merges
 * near the cut change only ids far past the ones kept. `encode()`, which returns every id, never cuts.
 * (docs/errors.md, "Input bounds")
 */
export const MAX_PRE_TOKEN_CHARS = 1000;

/** The end of text[start, end) cut for a row that keeps `limit` ids, not splitting a surrogate pair. */
function preTokenEnd(text: string, start: number, end: number, limit: number): number {
  const cap = Math.max(MAX_PRE_TOKEN_CHARS, 16 * limit); // Infinity for encode(): no cut
  if (end - start <= cap) return end;
  let cut = start + cap;
  const unit = text.charCodeAt(cut - 1);
  if (unit >= 0xd800 && unit <= 0xdbff) cut -= 1; // a high surrogate: keep the pair together by cutting before it
  return cut;
}

/** Validates tokenize's arguments; returns the truncation mode. */
function checkTokenizeArguments(contextLength: number, options: TokenizeOptions): Truncation {
  if (!Number.isInteger(contextLength) || contextLength < 2) {
    throw new RangeError(
      `tokenize: contextLength must be an integer >= 2 (room for SOT and EOT), got ${contextLength}`,
    );
  }
  const truncation = options.truncation ?? "keep-eot";
  if (!TRUNCATIONS.includes(truncation)) {
    throw new RangeError(`tokenize: truncation must be one of ${TRUNCATIONS.join(", ")}, got ${truncation}`);
  }
  return truncation;
}
