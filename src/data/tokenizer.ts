// tokenizer.ts: OpenAI CLIP's byte-level BPE tokenizer (`SimpleTokenizer`, SPEC §6.3) in plain TypeScript, so ids
// match OpenAI's for its vocab file and for merges files written by bpe_trainer.ts.
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
import { gunzipSync } from "node:zlib";
import { Tensor } from "../torch/mod.ts";

/** The context length of CLIP's text encoder. */
export const DEFAULT_CONTEXT_LENGTH = 77;
/** How many merges OpenAI's code reads from `bpe_simple_vocab_16e6.txt.gz` (49152 - 256 - 2). */
export const OPENAI_MERGE_COUNT = 48_894;
/** OpenAI's file holds 262,145 merge lines although only the first 48,894 are used; a file this long is taken as it. */
const OPENAI_FILE_MIN_MERGES = 262_144;
export const START_OF_TEXT = "<|startoftext|>";
export const END_OF_TEXT = "<|endoftext|>";
const END_OF_WORD = "</w>";

/**
 * How an over-long caption is cut to the context length (SPEC §12.4):
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

/** The ftfy.fix_text subset described at the top of this file. */
export function fixText(text: string): string {
  if (PLAIN_RE.test(text) && !text.includes("&")) return text;
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
  for (;;) {
    const before = text;
    if (unescape) text = text.replace(/&#?[0-9A-Za-z]{1,24};/g, unescapeStrictEntity);
    text = text.replace(C1_RE, (c) => CP1252_C1[c.charCodeAt(0) - 0x80]);
    text = text.replace(LIGATURE_RE, (c) => LIGATURES[c]);
    text = text.replace(WIDTH_RE, fixWidth);
    text = text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
    text = text.replace(/\r\n|[\r\u2028\u2029\x85]/g, "\n");
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

/** The pre-tokens of an already cleaned caption, in order: specials, contractions, letter runs, single digits, and
 * runs of everything else but whitespace. */
export function splitWords(cleanText: string): string[] {
  return cleanText.match(PRE_TOKEN_RE) ?? [];
}

// ---- merges files ----------------------------------------------------------------------------------------------------

/**
 * Reads a merges file (gzip detected by its magic bytes, so the name does not matter). The first line must be the
 * `#version` header. `mergeCount` limits how many merges are used; by default all of them, except for a file shaped
 * like OpenAI's bpe_simple_vocab_16e6 (≥ 262,144 merge lines), of which OpenAI's code uses only the first 48,894.
 */
export function readMerges(path: string, options: { mergeCount?: number } = {}): string[] {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (error) {
    throw new BpeFileError(`cannot read merges file ${path}: ${(error as Error).message}`);
  }
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes);
    } catch (error) {
      throw new BpeFileError(`merges file ${path} is not valid gzip: ${(error as Error).message}`);
    }
  }
  const lines = new TextDecoder().decode(bytes).split("\n");
  if (!lines[0].startsWith("#version")) {
    throw new BpeFileError(
      `merges file ${path}: expected a '#version' header on line 1, found ${JSON.stringify(lines[0].slice(0, 40))}`,
    );
  }
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

export class ClipTokenizer {
  readonly #ranks = new Map<string, number>();
  readonly #encoder = new Map<string, number>();
  readonly #decoder: string[];
  readonly #sot: number;
  readonly #eot: number;
  #cache = new Map<string, number[]>();
  /** The merges in rank order, as given (checkpoints store them, so a run's tokenizer travels with its weights). */
  readonly merges: readonly string[];

  /** `merges` are "a b" strings in rank order (line 2 onwards of a merges file). */
  constructor(merges: readonly string[]) {
    this.merges = [...merges];
    const bytes = [...bytesToUnicode().values()];
    const vocab = [...bytes, ...bytes.map((c) => c + END_OF_WORD)];
    merges.forEach((merge, rank) => {
      const parts = merge.split(" ");
      if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
        throw new BpeFileError(`merge ${rank}: expected "a b", got ${JSON.stringify(merge)}`);
      }
      // Python's dict(zip(...)) keeps the last rank of a repeated pair and the last id of a repeated string.
      this.#ranks.set(merge, rank);
      vocab.push(parts[0] + parts[1]);
    });
    vocab.push(START_OF_TEXT, END_OF_TEXT);
    vocab.forEach((token, id) => this.#encoder.set(token, id));
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
    const ids: number[] = [];
    for (const word of splitWords(cleanCaption(text))) {
      if (word === START_OF_TEXT) ids.push(this.#sot);
      else if (word === END_OF_TEXT) ids.push(this.#eot);
      else ids.push(...this.#bpe(word));
    }
    return ids;
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

  /** [SOT] + ids + [EOT] per caption, cut to `contextLength` (SPEC §12.4) and zero-padded. */
  tokenizeRows(
    texts: readonly string[],
    contextLength: number = DEFAULT_CONTEXT_LENGTH,
    options: TokenizeOptions = {},
  ): TokenizedRows {
    if (!Number.isInteger(contextLength) || contextLength < 2) {
      throw new RangeError(
        `tokenize: contextLength must be an integer >= 2 (room for SOT and EOT), got ${contextLength}`,
      );
    }
    const truncation = options.truncation ?? "keep-eot";
    if (!TRUNCATIONS.includes(truncation)) {
      throw new RangeError(`tokenize: truncation must be one of ${TRUNCATIONS.join(", ")}, got ${truncation}`);
    }
    const rows = this.#rows(texts, contextLength, truncation);
    for (const row of rows.ids) while (row.length < contextLength) row.push(0);
    return rows;
  }

  /** Like tokenizeRows, without the padding (tokenize writes into a zeroed buffer). */
  #rows(texts: readonly string[], contextLength: number, truncation: Truncation): TokenizedRows {
    const truncated: number[] = [];
    const ids = texts.map((text, i) => {
      const tokens = this.encode(text);
      tokens.unshift(this.#sot);
      tokens.push(this.#eot);
      if (tokens.length > contextLength) {
        truncated.push(i);
        tokens.length = contextLength;
        if (truncation === "keep-eot") tokens[contextLength - 1] = this.#eot;
      }
      return tokens;
    });
    return { ids, truncated };
  }

  /** The model's text input: (B, T) int64 for a list, (T,) for a single string, as OpenAI's `clip.tokenize`. */
  tokenize(
    texts: string | readonly string[],
    contextLength: number = DEFAULT_CONTEXT_LENGTH,
    options: TokenizeOptions = {},
  ): Tensor {
    const list = typeof texts === "string" ? [texts] : texts;
    this.tokenizeRows([], contextLength, options); // validates the arguments
    const { ids } = this.#rows(list, contextLength, options.truncation ?? "keep-eot");
    const flat = new BigInt64Array(list.length * contextLength);
    // Ids are small non-negative integers: write the low 32 bits of each little-endian int64 (no BigInt per id).
    const words = new Int32Array(flat.buffer);
    ids.forEach((row, i) => {
      const base = 2 * i * contextLength;
      for (let t = 0; t < row.length; t++) words[base + 2 * t] = row[t];
    });
    const shape = typeof texts === "string" ? [contextLength] : [list.length, contextLength];
    return Tensor.fromArray(flat, shape, { dtype: "int64" });
  }

  /** OpenAI's `bpe()`: merge the lowest-ranked adjacent pair, every occurrence left to right, until none is ranked. */
  #bpe(preToken: string): number[] {
    // Cached by the pre-token itself, so a cache hit skips the byte encoding too.
    const hit = this.#cache.get(preToken);
    if (hit !== undefined) return hit;
    let word = byteEncode(preToken).split("");
    word[word.length - 1] += END_OF_WORD;
    while (word.length > 1) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const rank = this.#ranks.get(word[i] + " " + word[i + 1]);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best], second = word[best + 1];
      const merged: string[] = word.slice(0, best);
      for (let i = best; i < word.length;) {
        if (word[i] === first && i + 1 < word.length && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(word[i++]);
        }
      }
      word = merged;
    }
    const ids = word.map((symbol) => {
      const id = this.#encoder.get(symbol);
      if (id === undefined) throw new Error(`bpe: symbol ${JSON.stringify(symbol)} has no id (inconsistent merges)`);
      return id;
    });
    if (this.#cache.size >= CACHE_LIMIT) this.#cache = new Map();
    this.#cache.set(preToken, ids);
    return ids;
  }
}
