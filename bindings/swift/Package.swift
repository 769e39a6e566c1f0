// swift-tools-version:5.9
// ember for Swift: `import Ember` (Model, Context, Sampler, ChatSession, generate and reply
// as async streams).
//
// The native library comes from EmberFFI.xcframework, which tools/build-xcframework (run
// on a Mac) builds next to this file from the iOS device, iOS simulator and macOS static
// libraries. Add the package to an app as a local package (File > Add Package
// Dependencies... > Add Local..., or `.package(path: "../ember/bindings/swift")`).
import PackageDescription

let package = Package(
    name: "Ember",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Ember", targets: ["Ember"]),
        .executable(name: "ember-swift-example", targets: ["EmberExample"]),
    ],
    targets: [
        .binaryTarget(name: "EmberFFI", path: "EmberFFI.xcframework"),
        // The C API as a Clang module (Sources/CEmber/include/module.modulemap).
        .target(
            name: "CEmber",
            dependencies: ["EmberFFI"],
            // What the Rust standard library in libember.a needs on Apple platforms
            // (`rustc --print native-static-libs`: -liconv -lSystem -lc -lm).
            linkerSettings: [.linkedLibrary("iconv")]
        ),
        .target(name: "Ember", dependencies: ["CEmber"]),
        .executableTarget(name: "EmberExample", dependencies: ["Ember"]),
    ]
)
