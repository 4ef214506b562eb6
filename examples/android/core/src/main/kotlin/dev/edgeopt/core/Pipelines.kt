package dev.edgeopt.core

/** The graph's feeds for one row, by the manifest's input names, padded to a fixed shape if it has one. */
object Feeds {
    fun build(manifest: Manifest, text: String, encoding: Encoding?): Map<String, Tensor> {
        val out = LinkedHashMap<String, Tensor>()
        val seq = manifest.fixedInputShape?.sequence ?: encoding?.length ?: 0
        if (encoding != null && encoding.length > seq) {
            throw BundleException("${encoding.length} tokens do not fit the graph's fixed sequence $seq")
        }
        val pad = manifest.tokenizer?.padTokenId ?: 0
        fun padded(values: LongArray, fill: Long) = Tensor.Longs(longArrayOf(1, seq.toLong()),
            LongArray(seq) { if (it < values.size) values[it] else fill })
        for (spec in manifest.inputs) {
            out[spec.name] = when {
                spec.isText -> Tensor.Strings(longArrayOf(1), arrayOf(text))
                encoding == null -> throw BundleException("input ${spec.name} needs a tokenizer")
                spec.name == "input_ids" -> padded(encoding.ids, pad.toLong())
                spec.name == "attention_mask" -> padded(encoding.attentionMask, 0)
                spec.name == "token_type_ids" -> padded(encoding.typeIds, 0)
                else -> throw BundleException("input ${spec.name} is not one this app knows how to fill")
            }
        }
        return out
    }

    /** A tokenizer for a token-in manifest, null for a text-in one. */
    fun tokenizerFor(manifest: Manifest, files: BundleFiles): Tokenizer? {
        if (manifest.textInput) return null
        val names = manifest.tokenizer?.files ?: listOf("tokenizer.json")
        if ("tokenizer.json" !in names) throw BundleException("the manifest names no tokenizer.json")
        @Suppress("UNCHECKED_CAST")
        val json = Json.parse(files.open("tokenizer.json").use { it.readBytes().toString(Charsets.UTF_8) }) as Map<String, Any?>
        return WordPieceTokenizer.fromTokenizerJson(json, manifest.maxSequenceLength)
    }
}

data class Classification(val index: Int, val label: String, val probabilities: FloatArray, val logits: FloatArray)

class Classifier(private val manifest: Manifest, private val tokenizer: Tokenizer?, private val session: ModelSession) {
    init {
        require(manifest.task == "text-classification") { "task ${manifest.task} is not text-classification" }
    }

    fun classify(text: String): Classification {
        val out = session.run(Feeds.build(manifest, text, tokenizer?.encode(text)))
        return fromLogits((out[outputName()] as Tensor.Floats).data)
    }

    fun fromLogits(logits: FloatArray): Classification {
        val index = Processing.argmax(logits)
        return Classification(index, manifest.labelNames?.getOrNull(index) ?: index.toString(),
                              Processing.softmax(logits), logits)
    }

    private fun outputName() = manifest.outputs.firstOrNull { it.name == "logits" }?.name ?: manifest.outputs.first().name
}

class Embedder(private val manifest: Manifest, private val tokenizer: Tokenizer?, private val session: ModelSession) {
    init {
        require(manifest.task == "feature-extraction") { "task ${manifest.task} is not feature-extraction" }
    }

    fun embed(text: String): FloatArray {
        val enc = tokenizer?.encode(text)
        val feeds = Feeds.build(manifest, text, enc)
        val out = session.run(feeds)
        val name = manifest.outputs.firstOrNull { it.name == "sentence_embedding" }?.name ?: manifest.outputs.first().name
        val mask = (feeds["attention_mask"] as Tensor.Longs?)?.data
        return fromOutput(out[name] as Tensor.Floats, mask)
    }

    /** Pooled in the graph (rank 2): as is. Token states (rank 3): pooled and normalized here. */
    fun fromOutput(t: Tensor.Floats, mask: LongArray?): FloatArray {
        if (t.shape.size == 2) return t.data.copyOf()
        val seq = t.shape[1].toInt(); val hidden = t.shape[2].toInt()
        val pooled = Processing.pool(t.data, seq, hidden, mask ?: LongArray(seq) { 1 }, manifest.pooling ?: "mean")
        return if (manifest.normalized == true) Processing.l2normalize(pooled) else pooled
    }
}
