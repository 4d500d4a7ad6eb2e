/// Which path a migration tries first, and where it goes when the privileged path is refused.
struct MigrationPlan {
    let requested: MigrationPath

    /// Privileged unless the caller asked for the cooperative path.
    var firstPath: MigrationPath { requested == .cooperative ? .cooperative : .privileged }

    /// Returns when the cooperative path should follow a privileged one that failed with `refusal`: the
    /// kernel refused for lack of `CAP_SYS_NICE` and the caller let the library choose. Otherwise the
    /// refusal is the answer, and is thrown (with advice when it was about privilege).
    func fallBackToCooperative(after refusal: XPMEMError) throws(XPMEMError) {
        guard refusal.code == .permissionDenied else { throw refusal }
        guard requested == .automatic else { throw refusal.advising("use the cooperative path") }
    }
}

extension XPMEMError {
    /// The same error with what to do about it appended to the message.
    func advising(_ advice: String) -> XPMEMError {
        XPMEMError(code, "\(message); \(advice)", errno: errno)
    }
}
