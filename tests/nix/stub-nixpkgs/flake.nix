# A stand-in for nixpkgs for odu's flake test (tests/it/install.rs): nothing is downloaded or
# built. `rustPlatform.buildRustPackage` and `mkShell` return derivation-like attrsets whose
# `recorded` attribute holds what odu's flake asked for.
{
  description = "stub nixpkgs: records odu's flake's calls";

  outputs =
    { self }:
    let
      lib = import ./lib.nix;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems (system: import ./pkgs.nix { inherit lib system; });
    };
}
