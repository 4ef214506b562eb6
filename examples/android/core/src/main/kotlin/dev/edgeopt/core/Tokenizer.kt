package dev.edgeopt.core

import java.text.Normalizer
import java.util.Locale

/** A tokenized row: what a token-in bundle's graph takes. */
data class Encoding(val ids: LongArray, val attentionMask: LongArray, val typeIds: LongArray) {
    val length: Int get() = ids.size
}

/**
 * The seam between the app and tokenization. Token-in bundles (today's) get a
 * [WordPieceTokenizer] built from the bundle's tokenizer.json; a text-in bundle (the
 * tokenizer inside the graph, onnxruntime-extensions) needs none: [Pipelines] feed the
 * string itself when the manifest's input is a string tensor.
 */
interface Tokenizer {
    fun encode(text: String): Encoding
}

/**
 * A port of the Hugging Face `tokenizers` pipeline BERT-family bundles ship: BertNormalizer,
 * BertPreTokenizer, WordPiece and the single-sequence template ([CLS] A [SEP]), truncating
 * the word pieces so that the result fits [maxLength]. Tokens written as special tokens in
 * the input text ("[SEP]") are not matched as such; BPE bundles are not covered.
 */
class WordPieceTokenizer(
    private val vocab: Map<String, Int>,
    private val unkToken: String,
    private val prefix: String,
    private val maxCharsPerWord: Int,
    private val cleanText: Boolean,
    private val chineseChars: Boolean,
    private val stripAccents: Boolean,
    private val lowercase: Boolean,
    private val before: List<Pair<Int, Int>>,
    private val after: List<Pair<Int, Int>>,
    private val maxLength: Int?,
) : Tokenizer {
    private val unkId = vocab[unkToken] ?: throw BundleException("tokenizer vocab has no $unkToken")

    companion object {
        /** From a parsed tokenizer.json; [maxLength] is the manifest's max_sequence_length. */
        @Suppress("UNCHECKED_CAST")
        fun fromTokenizerJson(json: Map<String, Any?>, maxLength: Int?): WordPieceTokenizer {
            val model = json.obj("model") ?: throw BundleException("tokenizer.json has no model")
            if (model.str("type") != "WordPiece") {
                throw BundleException("tokenizer model ${model.str("type")} is not WordPiece; this port reads BERT-family tokenizers only")
            }
            val vocab = (model.obj("vocab") ?: emptyMap()).mapValues { (it.value as Number).toInt() }
            val norm = json.obj("normalizer")
            if (norm != null && norm.str("type") != "BertNormalizer") {
                throw BundleException("tokenizer normalizer ${norm.str("type")} is not BertNormalizer")
            }
            val lower = norm?.bool("lowercase") ?: false
            val (before, after) = template(json.obj("post_processor"), vocab)
            return WordPieceTokenizer(
                vocab, model.str("unk_token") ?: "[UNK]", model.str("continuing_subword_prefix") ?: "##",
                model.int("max_input_chars_per_word") ?: 100,
                norm?.bool("clean_text") ?: false, norm?.bool("handle_chinese_chars") ?: false,
                norm?.bool("strip_accents") ?: lower, lower, before, after, maxLength,
            )
        }

        /** The (id, type id) pairs the single-sequence template puts before and after the text. */
        @Suppress("UNCHECKED_CAST")
        private fun template(post: Map<String, Any?>?, vocab: Map<String, Int>): Pair<List<Pair<Int, Int>>, List<Pair<Int, Int>>> {
            if (post == null) return emptyList<Pair<Int, Int>>() to emptyList()
            return when (post.str("type")) {
                "BertProcessing" -> {
                    val cls = post.list("cls")!!; val sep = post.list("sep")!!
                    listOf((cls[1] as Number).toInt() to 0) to listOf((sep[1] as Number).toInt() to 0)
                }
                "TemplateProcessing" -> {
                    val specials = post.obj("special_tokens") ?: emptyMap()
                    val before = ArrayList<Pair<Int, Int>>(); val after = ArrayList<Pair<Int, Int>>()
                    var seen = false
                    for (piece in post.list("single")!!) {
                        val p = piece as Map<String, Any?>
                        val seq = p.obj("Sequence")
                        if (seq != null) { seen = true; continue }
                        val tok = p.obj("SpecialToken")!!
                        val ids = (specials[tok.str("id")] as Map<String, Any?>?)?.list("ids")?.map { (it as Number).toInt() }
                            ?: listOf(vocab[tok.str("id")]!!)
                        ids.forEach { (if (seen) after else before).add(it to (tok.int("type_id") ?: 0)) }
                    }
                    before to after
                }
                else -> throw BundleException("tokenizer post_processor ${post.str("type")} is not supported")
            }
        }
    }

    override fun encode(text: String): Encoding {
        val pieces = ArrayList<Int>()
        for (word in preTokenize(normalize(text))) pieces.addAll(wordPiece(word))
        val room = maxLength?.let { it - before.size - after.size }
        val kept = if (room != null && pieces.size > room) pieces.subList(0, maxOf(room, 0)) else pieces
        val ids = before.map { it.first } + kept + after.map { it.first }
        val types = before.map { it.second } + kept.map { 0 } + after.map { it.second }
        return Encoding(ids.map { it.toLong() }.toLongArray(), LongArray(ids.size) { 1 },
                        types.map { it.toLong() }.toLongArray())
    }

    /** BertNormalizer, in its order: clean, pad CJK, strip accents, lowercase. */
    fun normalize(text: String): String {
        val sb = StringBuilder()
        for (c in text.codePoints()) {
            if (cleanText) {
                if (c == 0 || c == 0xFFFD || isControl(c)) continue
                if (isWhitespace(c)) { sb.append(' '); continue }
            }
            if (chineseChars && isChinese(c)) sb.append(' ').appendCodePoint(c).append(' ')
            else sb.appendCodePoint(c)
        }
        var s = sb.toString()
        if (stripAccents) {
            val out = StringBuilder()
            for (c in Normalizer.normalize(s, Normalizer.Form.NFD).codePoints()) {
                if (Character.getType(c) != Character.NON_SPACING_MARK.toInt()) out.appendCodePoint(c)
            }
            s = out.toString()
        }
        if (lowercase) {
            val out = StringBuilder()
            for (c in s.codePoints()) out.append(String(Character.toChars(c)).lowercase(Locale.ROOT))
            s = out.toString()
        }
        return s
    }

    /** BertPreTokenizer: split on whitespace (dropped) and punctuation (kept alone). */
    fun preTokenize(text: String): List<IntArray> {
        val words = ArrayList<IntArray>()
        val cur = ArrayList<Int>()
        fun flush() { if (cur.isNotEmpty()) { words.add(cur.toIntArray()); cur.clear() } }
        for (c in text.codePoints()) {
            when {
                isWhitespace(c) -> flush()
                isPunctuation(c) -> { flush(); words.add(intArrayOf(c)) }
                else -> cur.add(c)
            }
        }
        flush()
        return words
    }

    /** Greedy longest-match-first; a word with any unmatched rest is one [UNK]. */
    private fun wordPiece(word: IntArray): List<Int> {
        if (word.size > maxCharsPerWord) return listOf(unkId)
        val out = ArrayList<Int>()
        var start = 0
        while (start < word.size) {
            var end = word.size
            var found: Int? = null
            while (start < end) {
                val sub = String(word, start, end - start)
                val id = vocab[if (start > 0) prefix + sub else sub]
                if (id != null) { found = id; break }
                end--
            }
            if (found == null) return listOf(unkId)
            out.add(found)
            start = end
        }
        return out
    }

    private fun isControl(c: Int): Boolean {
        if (c == '\t'.code || c == '\n'.code || c == '\r'.code) return false
        return when (Character.getType(c).toByte()) {
            Character.CONTROL, Character.FORMAT, Character.UNASSIGNED, Character.PRIVATE_USE -> true
            else -> false
        }
    }

    // Unicode's White_Space property (what Rust's char::is_whitespace tests), not Java's
    // Character.isWhitespace, which leaves out the no-break spaces.
    private fun isWhitespace(c: Int): Boolean = c in 0x09..0x0D || c == 0x20 || c == 0x85 || c == 0xA0 ||
        c == 0x1680 || c in 0x2000..0x200A || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000

    private fun isPunctuation(c: Int): Boolean {
        if (c in 33..47 || c in 58..64 || c in 91..96 || c in 123..126) return true
        return when (Character.getType(c).toByte()) {
            Character.CONNECTOR_PUNCTUATION, Character.DASH_PUNCTUATION, Character.START_PUNCTUATION,
            Character.END_PUNCTUATION, Character.INITIAL_QUOTE_PUNCTUATION, Character.FINAL_QUOTE_PUNCTUATION,
            Character.OTHER_PUNCTUATION -> true
            else -> false
        }
    }

    private fun isChinese(c: Int): Boolean = c in 0x4E00..0x9FFF || c in 0x3400..0x4DBF || c in 0x20000..0x2A6DF ||
        c in 0x2A700..0x2B73F || c in 0x2B740..0x2B81F || c in 0x2B920..0x2CEAF || c in 0xF900..0xFAFF ||
        c in 0x2F800..0x2FA1F
}
