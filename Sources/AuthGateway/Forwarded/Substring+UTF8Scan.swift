extension Substring {
    /// Whether the UTF-8 form contains `byte`, scanned in place: walking `Substring.UTF8View` index by index (or a
    /// Foundation string search) was among the largest costs of a cached decision in perf.
    func utf8Contains(_ byte: UInt8) -> Bool {
        utf8.withContiguousStorageIfAvailable { $0.contains(byte) } ?? utf8.contains(byte)
    }

    /// How many times `byte` occurs in the UTF-8 form, scanned in place.
    func utf8Count(of byte: UInt8) -> Int {
        func count(_ bytes: some Sequence<UInt8>) -> Int { bytes.reduce(0) { $1 == byte ? $0 + 1 : $0 } }
        return utf8.withContiguousStorageIfAvailable { count($0) } ?? count(utf8)
    }
}
