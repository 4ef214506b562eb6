package dev.edgeopt.core

/** A tensor crossing the [ModelSession] boundary: row-major data and its shape. */
sealed class Tensor(val shape: LongArray) {
    class Longs(shape: LongArray, val data: LongArray) : Tensor(shape)
    class Floats(shape: LongArray, val data: FloatArray) : Tensor(shape)
    class Strings(shape: LongArray, val data: Array<String>) : Tensor(shape)
}

/**
 * What the app logic needs from onnxruntime, so it runs (and is tested) without it: the
 * Android module implements this over OrtSession; tests implement it over fixtures.
 */
interface ModelSession : AutoCloseable {
    /** The execution provider the session actually got (shown on screen). */
    val provider: String
    fun run(inputs: Map<String, Tensor>): Map<String, Tensor>
}
