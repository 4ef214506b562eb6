plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.edgeopt.example"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.edgeopt.example"
        minSdk = 27 // NNAPI 1.1; the XNNPACK and CPU providers run on older releases too
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }

    // model.onnx is already compressed where it can be (int8 weights); stored, it is mapped as is.
    androidResources { noCompress += listOf("onnx", "ort") }
}

dependencies {
    implementation(project(":core"))
    // The full package: it has the com.microsoft contrib ops edgeopt's graphs use.
    implementation("com.microsoft.onnxruntime:onnxruntime-android:1.22.0")
    // Custom ops of text-in bundles (the tokenizer inside the graph); unused by token-in ones.
    implementation("com.microsoft.onnxruntime:onnxruntime-extensions-android:0.13.0")
}
