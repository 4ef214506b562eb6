package dev.edgeopt.core

/** The manifest's `decoder` section: the cache layout a generation loop feeds back. */
data class DecoderLayout(val numLayers: Int, val numKvHeads: Int, val headDim: Int, val vocabSize: Int,
                         val eosTokenIds: Set<Long>) {
    companion object {
        fun of(manifest: Manifest): DecoderLayout {
            val d = manifest.decoder ?: throw BundleException("the manifest has no decoder section (task ${manifest.task})")
            return DecoderLayout(d.int("num_layers")!!, d.int("num_kv_heads")!!, d.int("head_dim")!!, d.int("vocab_size")!!,
                (d.list("eos_token_ids") ?: emptyList()).map { (it as Number).toLong() }.toSet())
        }
    }
}

/**
 * Greedy decoding over a [ModelSession], the plain way the README describes: each step
 * feeds the new tokens, a mask as long as everything held, their positions and the last
 * step's `present.{i}.*` as `past_key_values.{i}.*` (zero-length for the prompt).
 */
class GreedyGenerator(private val layout: DecoderLayout, private val session: ModelSession) {
    /** The new token ids after [prompt], stopping at an end-of-sequence id or [maxNewTokens]. */
    fun generate(prompt: LongArray, maxNewTokens: Int, onToken: (Long) -> Unit = {}): LongArray {
        require(prompt.isNotEmpty()) { "an empty prompt has nothing to continue" }
        val out = ArrayList<Long>()
        var past: Map<String, Tensor> = (0 until layout.numLayers).flatMap { i ->
            listOf("key", "value").map { "past_key_values.$i.$it" to emptyCache() }
        }.toMap()
        var held = 0
        var step = prompt
        while (out.size < maxNewTokens) {
            val n = step.size
            val feeds = LinkedHashMap<String, Tensor>()
            feeds["input_ids"] = Tensor.Longs(longArrayOf(1, n.toLong()), step)
            feeds["attention_mask"] = Tensor.Longs(longArrayOf(1, (held + n).toLong()), LongArray(held + n) { 1 })
            feeds["position_ids"] = Tensor.Longs(longArrayOf(1, n.toLong()), LongArray(n) { (held + it).toLong() })
            feeds.putAll(past)
            val result = session.run(feeds)
            val logits = result["logits"] as Tensor.Floats
            val vocab = logits.shape[2].toInt()
            val last = logits.data.copyOfRange((n - 1) * vocab, n * vocab)
            val next = Processing.argmax(last).toLong()
            past = past.keys.associateWith { key ->
                val name = key.replace("past_key_values", "present")
                result[name] ?: throw BundleException("the graph returned no $name")
            }
            held += n
            out.add(next)
            onToken(next)
            if (next in layout.eosTokenIds) break
            step = longArrayOf(next)
        }
        return out.toLongArray()
    }

    private fun emptyCache() = Tensor.Floats(longArrayOf(1, layout.numKvHeads.toLong(), 0, layout.headDim.toLong()), FloatArray(0))
}
