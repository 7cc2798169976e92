# guestprep-script: install-qemu-ga
# guestprep-output: json
# Installs the QEMU guest agent from ITS OWN MSI (the drivers MSI virtio-win-gt-*.msi holds no
# qemu-ga): guest-agent\qemu-ga-x86_64.msi (qemu-ga-i386.msi on 32-bit Windows) on the
# virtio-win ISO, or that MSI given on its own. SHA-256 verified first; the MSI creates the
# QEMU-GA service (automatic start), read back here.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$op = 'windows.qemu_ga'
$MsiSuccess = @(0, 3010)

function Install-AgentMsi {
    param([string]$Msi)
    if (-not (Test-Path -LiteralPath $Msi)) { throw ('the media has no ' + $Msi) }
    $code = Get-MsiProperty -Path $Msi -Name 'ProductCode'
    $version = Get-MsiProperty -Path $Msi -Name 'ProductVersion'
    Initialize-GuestprepDir
    $log = Join-Path -Path $GuestprepDir -ChildPath 'qemu-ga-install.log'
    Add-JournalEntry -Operation $op -Kind 'msi_install' -Target $code -Detail @{ product_code = $code; media = $Msi; version = $version }
    $proc = Start-Process -FilePath 'msiexec.exe' -ArgumentList @('/i', ('"' + $Msi + '"'), '/qn', '/norestart', '/l*v', ('"' + $log + '"')) -Wait -PassThru
    if ($MsiSuccess -notcontains [int]$proc.ExitCode) { throw ('qemu-ga msiexec exited ' + $proc.ExitCode + ', see ' + $log) }
    return [ordered]@{ action = 'msi_installed'; product_code = $code; version = $version; exit_code = [int]$proc.ExitCode }
}

$media = [string]$p.media
$hash = Get-Sha256 -Path $media
if ($hash -ne ([string]$p.sha256).ToUpper()) { throw ('SHA-256 of ' + $media + ' is ' + $hash + ', expected ' + ([string]$p.sha256).ToUpper() + ': not installing') }
if ([string]$p.kind -eq 'iso') {
    if (-not (Get-Command -Name 'Mount-DiskImage' -ErrorAction SilentlyContinue)) { throw 'Mount-DiskImage is not available: provide the agent MSI (guest-agent\qemu-ga-x86_64.msi) as qemu_ga_media' }
    $img = Mount-DiskImage -ImagePath $media -PassThru
    try {
        $root = [string]($img | Get-Volume).DriveLetter + ':\'
        $step = Install-AgentMsi -Msi (Join-Path -Path $root -ChildPath ([string]$p.msi_path))
    } finally {
        $null = Dismount-DiskImage -ImagePath $media
    }
} elseif ([string]$p.kind -eq 'msi') {
    $step = Install-AgentMsi -Msi $media
} else { throw ('unsupported agent media kind ' + [string]$p.kind + ' (expected iso or msi)') }

$svc = Get-CimInstance -ClassName Win32_Service -Filter "Name = 'QEMU-GA'"
if ($null -eq $svc) { throw 'read back: the QEMU-GA service does not exist after the agent MSI ran' }
if ([string]$svc.StartMode -ne 'Auto') { throw ('read back: QEMU-GA start mode is ' + [string]$svc.StartMode + ', expected Auto') }
Write-Result -Value ([ordered]@{ ok = $true; steps = @($step); service = [ordered]@{ state = [string]$svc.State; start_mode = [string]$svc.StartMode } })
