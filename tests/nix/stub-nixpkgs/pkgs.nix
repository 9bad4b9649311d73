# One system's package set: stand-ins that record their arguments.
{ lib, system }:
let
  isLinux = lib.hasSuffix "-linux" system;
  # Looks like a derivation to `nix flake show` and to string interpolation.
  fake = name: {
    type = "derivation";
    inherit name system;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
  };
  tool = name: fake name // { pname = name; };
in
{
  inherit lib system;
  stdenv.hostPlatform = {
    inherit system isLinux;
    isDarwin = !isLinux;
  };

  rustPlatform.buildRustPackage =
    args:
    fake "${args.pname}-${args.version}"
    // {
      inherit (args) pname version;
      meta = args.meta or { };
      recorded = {
        inherit (args) pname version;
        buildType = args.buildType or "release";
        cargoBuildFlags = args.cargoBuildFlags or [ ];
        doCheck = args.doCheck or true;
        env = args.env or { };
        buildInputs = map (d: d.name) (args.buildInputs or [ ]);
        # The lock file by content: the test compares it with the checkout's Cargo.lock.
        cargoLock = builtins.hashFile "sha256" args.cargoLock.lockFile;
        cargoLockName = baseNameOf (toString args.cargoLock.lockFile);
        srcHasCargoToml = builtins.pathExists (args.src + "/Cargo.toml");
        mainProgram = args.meta.mainProgram or null;
      };
    };

  mkShell =
    args:
    fake "nix-shell"
    // {
      recorded.packages = map (d: d.pname or d.name) (args.packages or [ ]);
    };

  glibc.static = fake "glibc-static";
  rustc = tool "rustc";
  cargo = tool "cargo";
  clippy = tool "clippy";
  rustfmt = tool "rustfmt";
  just = tool "just";
  git = tool "git";
  openssh = tool "openssh";
  cargo-nextest = tool "cargo-nextest";
}
